#pragma once

// ReviewKD's hierarchical context loss of one stage pair on CUDA GPUs (csrc/cuda/hcl.cu launches
// it). Level math: tskd_fast/hcl_math.h, shared with the CPU kernel. A block owns one (n, c)
// plane, addressed through the map's four strides (NCHW and channels_last in place):
//   pass 1: d = fs - ft per pixel, sum d^2, and d added (shared-memory atomics) to the sum of
//           every pooling window holding the pixel;
//   then a thread per window turns its sum into the pooled mean, the loss term and the window's
//           gradient coefficient (shared memory);
//   pass 2 (with the gradient): d again (an L2 hit) and d / (H W) plus the coefficients of the
//           windows holding the pixel, scaled, written once.
// The block's plane term goes to a per-plane buffer that the host sums in a fixed order.
#include <cstdint>

#include "cuda/reduce.cuh"
#include "tskd_fast/hcl_math.h"

namespace tskd_fast::cuda {

constexpr int kHclThreads = 256;
// Pooling windows (the sum of l^2 over the included levels) a block keeps in shared memory: two
// floats each, 8 KiB in all (the default levels 4, 2, 1 have 21).
constexpr int64_t kHclMaxWindows = 1024;

struct HclPlaneParams {
  int64_t c, h, w;
  int64_t sfn, sfc, sfh, sfw;  // student
  int64_t stn, stc, sth, stw;  // teacher
  int64_t sgn, sgc, sgh, sgw;  // gradient
  HclLevels levels;
  int64_t offset[kHclMaxLevels];  // first window of each level; windows of level k: l^2
  int64_t windows;
  float grad_factor;  // grad_scale * 2 / (tot N C)
};

struct HclAdd {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

template <typename scalar_t>
__global__ void hcl_plane_kernel(const scalar_t* __restrict__ fs, const scalar_t* __restrict__ ft,
                                 scalar_t* __restrict__ grad, float* __restrict__ planes,
                                 HclPlaneParams q) {
  __shared__ float sums[kHclMaxWindows];
  __shared__ float coef[kHclMaxWindows];
  const int64_t plane = blockIdx.x;
  const int64_t n = plane / q.c, c = plane % q.c;
  const int64_t hw = q.h * q.w;
  const scalar_t* fsp = fs + n * q.sfn + c * q.sfc;
  const scalar_t* ftp = ft + n * q.stn + c * q.stc;
  for (int64_t k = threadIdx.x; k < q.windows; k += blockDim.x) sums[k] = 0.0f;
  __syncthreads();
  float ssq = 0.0f;
  for (int64_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const int64_t u = p / q.w, v = p % q.w;
    const float d = static_cast<float>(fsp[u * q.sfh + v * q.sfw]) -
                    static_cast<float>(ftp[u * q.sth + v * q.stw]);
    ssq += d * d;
    for (int k = 0; k < q.levels.count; ++k) {
      const int64_t l = q.levels.size[k];
      const int64_t i1 = last_window(u, q.h, l), j1 = last_window(v, q.w, l);
      for (int64_t i = first_window(u, q.h, l); i < i1; ++i) {
        for (int64_t j = first_window(v, q.w, l); j < j1; ++j) {
          atomicAdd(sums + q.offset[k] + i * l + j, d);
        }
      }
    }
  }
  __syncthreads();
  float terms = ssq / static_cast<float>(hw);
  for (int64_t wdx = threadIdx.x; wdx < q.windows; wdx += blockDim.x) {
    int k = 0;
    while (k + 1 < q.levels.count && wdx >= q.offset[k + 1]) ++k;
    const int64_t l = q.levels.size[k];
    const int64_t i = (wdx - q.offset[k]) / l, j = (wdx - q.offset[k]) % l;
    const float count = static_cast<float>((window_end(i, q.h, l) - window_start(i, q.h, l)) *
                                           (window_end(j, q.w, l) - window_start(j, q.w, l)));
    const float level_coef = static_cast<float>(q.levels.coef[k]);
    const float mean = sums[wdx] / count;
    terms += level_coef * mean * mean;
    coef[wdx] = level_coef * mean / count;
  }
  terms = group_reduce<kHclThreads>(terms, HclAdd{});  // synchronises: coef is complete
  if (threadIdx.x == 0) planes[plane] = terms;
  if (grad == nullptr) return;
  scalar_t* gp = grad + n * q.sgn + c * q.sgc;
  const float full = 1.0f / static_cast<float>(hw);
  for (int64_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const int64_t u = p / q.w, v = p % q.w;
    const float d = static_cast<float>(fsp[u * q.sfh + v * q.sfw]) -
                    static_cast<float>(ftp[u * q.sth + v * q.stw]);
    float g = d * full;
    for (int k = 0; k < q.levels.count; ++k) {
      const int64_t l = q.levels.size[k];
      const int64_t i1 = last_window(u, q.h, l), j1 = last_window(v, q.w, l);
      for (int64_t i = first_window(u, q.h, l); i < i1; ++i) {
        for (int64_t j = first_window(v, q.w, l); j < j1; ++j) g += coef[q.offset[k] + i * l + j];
      }
    }
    gp[u * q.sgh + v * q.sgw] = static_cast<scalar_t>(g * q.grad_factor);
  }
}

}  // namespace tskd_fast::cuda
