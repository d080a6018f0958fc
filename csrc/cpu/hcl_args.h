#pragma once

#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cstdint>

#include "cpu/isa_declare.h"
#include "tskd_fast/hcl_math.h"

// Arguments of the CPU HCL kernel (csrc/cpu/hcl_kernel.h), filled by csrc/cpu/hcl.cpp after the
// inputs are checked; compiled once per vector ISA (csrc/cpu/isa/hcl_<isa>.cpp).
namespace tskd_fast::cpu {

struct HclArgs {
  const void* student;  // (N, C, H, W), NCHW- or (channels_last) NHWC-contiguous
  const void* teacher;  // same shape and layout
  void* grad;           // same shape and layout, or nullptr
  double* partials;     // (partial_count(),): per-task sums of the plane terms (hcl_math.h)
  int64_t n, c, h, w;
  HclLevels levels;
  double grad_factor;  // grad_scale * 2 / (tot N C)
  bool channels_last;
  c10::ScalarType dtype;
};

// Channels per task on the channels_last path (the vector lanes), the most planes per task on
// the NCHW path (kHclPlaneBlock for maps of up to 64 elements, kHclChannelBlock up to 784), and
// elements per task when no level applies.
constexpr int64_t kHclChannelBlock = 16;
constexpr int64_t kHclPlaneBlock = 64;
constexpr int64_t kHclFlatChunk = 16384;

// Lanes of one task: channels (channels_last), or NCHW planes. A multi-plane task's window work
// is the same however many planes share it, so small maps take many: 64 planes per task for maps
// of up to 64 elements (16-20 KiB buffers, within L1), 16 for maps of up to 784 (28x28; more
// planes overflow L1 there), one for larger maps (their window work is small per element). The
// measurements behind each bound: benchmarks/README.md, "Kernel design measurements".
inline int64_t hcl_task_lanes(const HclArgs& a) {
  if (a.channels_last) return std::min(a.c, kHclChannelBlock);
  const int64_t hw = a.h * a.w;
  return hw <= 64 ? kHclPlaneBlock : hw <= 784 ? kHclChannelBlock : 1;
}

// How many partial sums the kernel writes: one per task, a fixed partition (deterministic).
inline int64_t hcl_partial_count(const HclArgs& a) {
  if (a.levels.count == 0) return (a.n * a.c * a.h * a.w + kHclFlatChunk - 1) / kHclFlatChunk;
  const int64_t lanes = hcl_task_lanes(a);
  if (a.channels_last) return a.n * ((a.c + lanes - 1) / lanes);
  return (a.n * a.c + lanes - 1) / lanes;
}

#define TSKD_FAST_DECLARE_HCL_KERNELS(ISA) \
  namespace ISA {                          \
  void hcl_kernel(const HclArgs& a);       \
  }

TSKD_FAST_DECLARE_ISA_KERNELS(TSKD_FAST_DECLARE_HCL_KERNELS)
#undef TSKD_FAST_DECLARE_HCL_KERNELS

}  // namespace tskd_fast::cpu
