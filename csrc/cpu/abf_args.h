#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "cpu/isa_declare.h"

// Arguments of the CPU ABF-fusion kernels (csrc/cpu/abf_kernel.h), filled by
// csrc/cpu/abf.cpp after the inputs are checked; the kernels are compiled once per vector ISA
// (csrc/cpu/isa/abf_<isa>.cpp).
namespace tskd_fast::cpu {

// Feature maps are NCHW-contiguous or, with channels_last, NHWC-contiguous; x, y and the outputs
// share the layout. Weights and gates are of the opmath type (float, double for double features).

// The maps' sizes and the index tables of the nearest upsampling of y (yh <= h, yw <= w) to x.
struct AbfGeometry {
  const int32_t* src;        // (h * w,): the pixel of y (row * yw + col) that each pixel of x reads
  const int64_t* row_start;  // (yh + 1,): the first row of x that reads each row of y
  const int64_t* col_start;  // (yw + 1,): the first column of x that reads each column of y
  int64_t n, m, w, hw, yh, yw, yhw;
  int64_t tile_pixels;  // pixels of x per NCHW tile (whole rows, at least one row)
  bool channels_last;
  c10::ScalarType dtype;
};

struct AbfForwardArgs : AbfGeometry {
  const void* x;       // (N, M, h, w)
  const void* y;       // (N, M, yh, yw)
  const void* weight;  // (2, 2M) row-major
  const void* bias;    // (2,)
  void* out;           // (N, M, h, w)
  void* gates;         // (N, h * w, 2): z_0, z_1 of each pixel
};

struct AbfBackwardArgs : AbfGeometry {
  const void* grad;  // (N, M, h, w): d loss / d fused
  const void* x;
  const void* y;
  const void* weight;
  const void* gates;
  void* dx;                    // (N, M, h, w)
  void* dy;                    // (N, M, yh, yw)
  void* dweight;               // (2, 2M) opmath
  void* dbias;                 // (2,) opmath
  const int64_t* group_start;  // (groups + 1,): the residual rows of each task, [start, next)
  int64_t groups;              // tasks per image
  int64_t max_group_rows;      // the most residual rows in one group
};

// Pixels of x per NCHW tile: about 1 MiB of one tensor, so that most maps are one tile per image.
// A whole-map tile reads each tensor as one sequential stream, which the hardware prefetchers
// follow; tiles of a few hundred pixels, sized for L2, were slower on the small maps (each
// channel's slice of a tile is then a short jump in memory; benchmarks/README.md, "Kernel design
// measurements").
inline int64_t abf_tile_pixels(int64_t m) {
  const int64_t pixels = (int64_t{1} << 18) / m;
  return pixels < 64 ? 64 : (pixels > 4096 ? 4096 : pixels);
}

#define TSKD_FAST_DECLARE_ABF_KERNELS(ISA)                 \
  namespace ISA {                                          \
  void abf_fuse_forward_kernel(const AbfForwardArgs& a);   \
  void abf_fuse_backward_kernel(const AbfBackwardArgs& a); \
  }

TSKD_FAST_DECLARE_ISA_KERNELS(TSKD_FAST_DECLARE_ABF_KERNELS)
#undef TSKD_FAST_DECLARE_ABF_KERNELS

}  // namespace tskd_fast::cpu
