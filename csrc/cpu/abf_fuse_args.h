#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

// Arguments of the CPU ABF-fusion kernels (csrc/cpu/abf_fuse_kernel.h), filled by
// csrc/cpu/abf_fuse.cpp after the inputs are checked; the kernels are compiled once per vector ISA
// (csrc/cpu/isa/abf_fuse_hcl_<isa>.cpp).
namespace tskd_fast::cpu {

// Feature maps are NCHW-contiguous or, with channels_last, NHWC-contiguous; x, y and the outputs
// share the layout. Weights and gates are of the opmath type (float, double for double features).
struct AbfForwardArgs {
  const void* x;       // (N, M, h, w)
  const void* y;       // (N, M, yh, yw), yh <= h, yw <= w
  const void* weight;  // (2, 2M) row-major
  const void* bias;    // (2,)
  void* out;           // (N, M, h, w)
  void* gates;         // (N, h * w, 2): z_0, z_1 of each pixel
  const int32_t* src;  // (h * w,): the pixel of y (row * yw + col) that each pixel of x reads
  int64_t n, m, hw, yhw;
  bool channels_last;
  c10::ScalarType dtype;
};

struct AbfBackwardArgs {
  const void* grad;  // (N, M, h, w): d loss / d fused
  const void* x;
  const void* y;
  const void* weight;
  const void* gates;
  void* dx;       // (N, M, h, w)
  void* dy;       // (N, M, yh, yw)
  void* dweight;  // (2, 2M) opmath
  void* dbias;    // (2,) opmath
  const int32_t* src;
  const int64_t* row_start;  // (yh + 1,): the first row of x that reads each row of y
  int64_t n, m, w, hw, yh, yw, yhw;
  bool channels_last;
  c10::ScalarType dtype;
};

#define TSKD_FAST_DECLARE_ABF_KERNELS(ISA)                 \
  namespace ISA {                                          \
  void abf_fuse_forward_kernel(const AbfForwardArgs& a);   \
  void abf_fuse_backward_kernel(const AbfBackwardArgs& a); \
  }

TSKD_FAST_DECLARE_ABF_KERNELS(DEFAULT)
#if TSKD_FAST_X86_ISA
TSKD_FAST_DECLARE_ABF_KERNELS(AVX2)
TSKD_FAST_DECLARE_ABF_KERNELS(AVX512)
#endif
#undef TSKD_FAST_DECLARE_ABF_KERNELS

}  // namespace tskd_fast::cpu
