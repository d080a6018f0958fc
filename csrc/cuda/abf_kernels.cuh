#pragma once

// ReviewKD's attention fusion on CUDA GPUs (csrc/cuda/abf_fuse.cu launches these). Per-pixel math:
// tskd_fast/abf_math.h, shared with the CPU kernels. Maps are addressed through (batch, channel,
// pixel) strides, so NCHW and channels_last are read in place; the residual through
// nearest_source (never upsampled in memory).
//   forward: a thread per pixel walks the channels twice (the two attention sums; the output).
//   backward: a thread per pixel computes d z, writes d x, adds d y_up into a float buffer with
//             atomics and keeps d a (2 floats) per pixel; then a block per weight column sums
//             d a times the column's input over all pixels (a fixed-order reduction).
#include <cstdint>

#include "cuda/reduce.cuh"
#include "tskd_fast/abf_math.h"

namespace tskd_fast::cuda {

constexpr int kAbfThreads = 256;

struct AbfShape {
  int64_t n, m, h, w, yh, yw;
  int64_t sxn, sxc, sxp;  // strides of x, grad, fused and d x (one layout)
  int64_t syn, syc, syp;  // strides of y and the d y buffer
};

__device__ __forceinline__ int64_t abf_source_pixel(const AbfShape& s, int64_t p) {
  const int64_t u = p / s.w, v = p % s.w;
  return nearest_source(u, s.yh, s.h) * s.yw + nearest_source(v, s.yw, s.w);
}

template <typename scalar_t>
__global__ void abf_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
                                   const float* __restrict__ weight, const float* __restrict__ bias,
                                   scalar_t* __restrict__ out, float* __restrict__ gates,
                                   AbfShape s) {
  const int64_t hw = s.h * s.w;
  const int64_t pixel = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pixel >= s.n * hw) return;
  const int64_t n = pixel / hw, p = pixel % hw;
  const scalar_t* xp = x + n * s.sxn + p * s.sxp;
  const scalar_t* yp = y + n * s.syn + abf_source_pixel(s, p) * s.syp;
  float a0 = bias[0], a1 = bias[1];
  for (int64_t c = 0; c < s.m; ++c) {
    const AbfChannelWeights<float> wc = abf_channel_weights(weight, s.m, c);
    const float xv = static_cast<float>(xp[c * s.sxc]), yv = static_cast<float>(yp[c * s.syc]);
    a0 += wc.x0 * xv + wc.y0 * yv;
    a1 += wc.x1 * xv + wc.y1 * yv;
  }
  const float z0 = sigmoid(a0), z1 = sigmoid(a1);
  gates[2 * pixel] = z0;
  gates[2 * pixel + 1] = z1;
  scalar_t* op = out + n * s.sxn + p * s.sxp;
  for (int64_t c = 0; c < s.m; ++c) {
    const float xv = static_cast<float>(xp[c * s.sxc]), yv = static_cast<float>(yp[c * s.syc]);
    op[c * s.sxc] = static_cast<scalar_t>(xv * z0 + yv * z1);
  }
}

template <typename scalar_t>
__global__ void abf_backward_pixels_kernel(const scalar_t* __restrict__ grad,
                                           const scalar_t* __restrict__ x,
                                           const scalar_t* __restrict__ y,
                                           const float* __restrict__ weight,
                                           const float* __restrict__ gates,
                                           scalar_t* __restrict__ dx, float* __restrict__ dy_acc,
                                           float* __restrict__ gate_grads, AbfShape s) {
  const int64_t hw = s.h * s.w;
  const int64_t pixel = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pixel >= s.n * hw) return;
  const int64_t n = pixel / hw, p = pixel % hw;
  const int64_t x_off = n * s.sxn + p * s.sxp;
  const int64_t y_off = n * s.syn + abf_source_pixel(s, p) * s.syp;
  float d0 = 0.0f, d1 = 0.0f;
  for (int64_t c = 0; c < s.m; ++c) {
    const float g = static_cast<float>(grad[x_off + c * s.sxc]);
    d0 += g * static_cast<float>(x[x_off + c * s.sxc]);
    d1 += g * static_cast<float>(y[y_off + c * s.syc]);
  }
  const float z0 = gates[2 * pixel], z1 = gates[2 * pixel + 1];
  const float da0 = gate_logit_grad(d0, z0), da1 = gate_logit_grad(d1, z1);
  gate_grads[2 * pixel] = da0;
  gate_grads[2 * pixel + 1] = da1;
  for (int64_t c = 0; c < s.m; ++c) {
    const AbfChannelWeights<float> wc = abf_channel_weights(weight, s.m, c);
    const float g = static_cast<float>(grad[x_off + c * s.sxc]);
    dx[x_off + c * s.sxc] = static_cast<scalar_t>(abf_grad_x(wc, g, z0, da0, da1));
    atomicAdd(dy_acc + y_off + c * s.syc, abf_grad_y(wc, g, z1, da0, da1));
  }
}

struct AbfAdd {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

// Block j < 4M: d weight, flattened (2, 2M): gate k = j / 2M, input column j % 2M (x' for < M,
// y_up after); blocks 4M and 4M + 1: d bias.
template <typename scalar_t>
__global__ void abf_backward_weights_kernel(const scalar_t* __restrict__ x,
                                            const scalar_t* __restrict__ y,
                                            const float* __restrict__ gate_grads,
                                            float* __restrict__ dweight, float* __restrict__ dbias,
                                            AbfShape s) {
  const int64_t j = blockIdx.x;
  const int64_t hw = s.h * s.w;
  const bool is_bias = j >= 4 * s.m;
  const int64_t k = is_bias ? j - 4 * s.m : j / (2 * s.m);
  const int64_t column = j % (2 * s.m);
  const bool from_y = !is_bias && column >= s.m;
  const int64_t c = from_y ? column - s.m : column;
  float sum = 0.0f;
  for (int64_t pixel = threadIdx.x; pixel < s.n * hw; pixel += blockDim.x) {
    const float da = gate_grads[2 * pixel + k];
    if (is_bias) {
      sum += da;
      continue;
    }
    const int64_t n = pixel / hw, p = pixel % hw;
    const float v =
        from_y ? static_cast<float>(y[n * s.syn + abf_source_pixel(s, p) * s.syp + c * s.syc])
               : static_cast<float>(x[n * s.sxn + p * s.sxp + c * s.sxc]);
    sum += da * v;
  }
  sum = group_reduce<kAbfThreads>(sum, AbfAdd{});
  if (threadIdx.x == 0) {
    if (is_bias) {
      dbias[k] = sum;
    } else {
      dweight[j] = sum;
    }
  }
}

}  // namespace tskd_fast::cuda
