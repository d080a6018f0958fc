#pragma once

// ReviewKD's attention fusion on the CPU (per-pixel math: tskd_fast/abf_math.h). The residual is
// read through a per-pixel source index, never upsampled into memory, and the concatenation
// [x; y_up] exists only as the two channel sums of the 1x1 attention conv.
//   NCHW: a task owns a tile of kTile pixels of one image; the channel sums are vectors over the
//         tile (pass 1 over the channels), then the fused tile is written (pass 2; the x tile is
//         still in L2).
//   NHWC (channels_last): a task owns pixels; each pixel's channels are contiguous, so the channel
//         sums are vector reductions and the output a vector expression.
// Backward: a task owns one row of the residual, i.e. every pixel of x that reads it, so the
// adjoint of the upsampling (a sum over those pixels) accumulates without races or atomics in a
// fixed order; d weight and d bias are summed per fixed block of tasks and the blocks in order,
// so the result does not depend on the number of threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/abf_fuse_args.h"
#include "tskd_fast/abf_math.h"

namespace tskd_fast::cpu::CPU_CAPABILITY {

namespace abf {

constexpr int64_t kTile = 64;
constexpr int64_t kMaxBlocks = 64;
constexpr int64_t kTaskElements = 16384;  // elements of x per parallel chunk, at least

// kBroadcast: a 1x1 residual (yhw == 1), read as one value per channel instead of gathered per
// pixel (AVX2 gathers cost about as much as the rest of the loop).
template <bool kBroadcast, typename scalar_t, typename T>
void forward_nchw(const AbfForwardArgs& a) {
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* y = static_cast<const scalar_t*>(a.y);
  const auto* weight = static_cast<const T*>(a.weight);
  const auto* bias = static_cast<const T*>(a.bias);
  auto* out = static_cast<scalar_t*>(a.out);
  auto* gates = static_cast<T*>(a.gates);
  const int64_t m = a.m, hw = a.hw, yhw = a.yhw;
  const int64_t tiles = (hw + kTile - 1) / kTile;
  const int64_t grain = std::max<int64_t>(1, kTaskElements / (kTile * m));
  at::parallel_for(0, a.n * tiles, grain, [&](int64_t begin, int64_t end) {
    alignas(64) T z0[kTile], z1[kTile];
    alignas(64) int32_t idx[kTile];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / tiles, p0 = (task % tiles) * kTile;
      const int64_t count = std::min(kTile, hw - p0);
      const scalar_t* xn = x + n * m * hw + p0;
      const scalar_t* yn = y + n * m * yhw;
      scalar_t* on = out + n * m * hw + p0;
      for (int64_t p = 0; p < count; ++p) {
        z0[p] = bias[0];
        z1[p] = bias[1];
        idx[p] = a.src[p0 + p];
      }
      for (int64_t c = 0; c < m; ++c) {
        const AbfChannelWeights<T> wc = abf_channel_weights(weight, m, c);
        const scalar_t* xc = xn + c * hw;
        const scalar_t* yc = yn + c * yhw;
        const T y0 = static_cast<T>(yc[0]);
#pragma omp simd
        for (int64_t p = 0; p < count; ++p) {
          const T xv = static_cast<T>(xc[p]), yv = kBroadcast ? y0 : static_cast<T>(yc[idx[p]]);
          z0[p] += wc.x0 * xv + wc.y0 * yv;
          z1[p] += wc.x1 * xv + wc.y1 * yv;
        }
      }
      T* gn = gates + 2 * (n * hw + p0);
      for (int64_t p = 0; p < count; ++p) {
        z0[p] = sigmoid(z0[p]);
        z1[p] = sigmoid(z1[p]);
        gn[2 * p] = z0[p];
        gn[2 * p + 1] = z1[p];
      }
      for (int64_t c = 0; c < m; ++c) {
        const scalar_t* xc = xn + c * hw;
        const scalar_t* yc = yn + c * yhw;
        scalar_t* oc = on + c * hw;
        const T y0 = static_cast<T>(yc[0]);
#pragma omp simd
        for (int64_t p = 0; p < count; ++p) {
          const T yv = kBroadcast ? y0 : static_cast<T>(yc[idx[p]]);
          oc[p] = static_cast<scalar_t>(static_cast<T>(xc[p]) * z0[p] + yv * z1[p]);
        }
      }
    }
  });
}

template <typename scalar_t, typename T>
void forward_nhwc(const AbfForwardArgs& a) {
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* y = static_cast<const scalar_t*>(a.y);
  const auto* weight = static_cast<const T*>(a.weight);
  const auto* bias = static_cast<const T*>(a.bias);
  auto* out = static_cast<scalar_t*>(a.out);
  auto* gates = static_cast<T*>(a.gates);
  const int64_t m = a.m, hw = a.hw, yhw = a.yhw;
  const T* w0x = weight;
  const T* w0y = weight + m;
  const T* w1x = weight + 2 * m;
  const T* w1y = weight + 3 * m;
  const int64_t grain = std::max<int64_t>(1, kTaskElements / m);
  at::parallel_for(0, a.n * hw, grain, [&](int64_t begin, int64_t end) {
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      const int64_t n = pixel / hw, p = pixel % hw;
      const scalar_t* xp = x + pixel * m;
      const scalar_t* yp = y + (n * yhw + a.src[p]) * m;
      T s0 = bias[0], s1 = bias[1];
#pragma omp simd reduction(+ : s0, s1)
      for (int64_t c = 0; c < m; ++c) {
        const T xv = static_cast<T>(xp[c]), yv = static_cast<T>(yp[c]);
        s0 += w0x[c] * xv + w0y[c] * yv;
        s1 += w1x[c] * xv + w1y[c] * yv;
      }
      const T z0 = sigmoid(s0), z1 = sigmoid(s1);
      gates[2 * pixel] = z0;
      gates[2 * pixel + 1] = z1;
      scalar_t* op = out + pixel * m;
#pragma omp simd
      for (int64_t c = 0; c < m; ++c) {
        op[c] = static_cast<scalar_t>(static_cast<T>(xp[c]) * z0 + static_cast<T>(yp[c]) * z1);
      }
    }
  });
}

// One task: image n, residual row s. `acc` (M * yw opmath) collects d y_up of that row;
// `partial` (4M + 2) the block's d weight and d bias. kBroadcast as for forward_nchw.
template <bool kBroadcast, typename scalar_t, typename T>
void backward_task_nchw(const AbfBackwardArgs& a, int64_t n, int64_t s, T* acc, T* partial) {
  const auto* grad = static_cast<const scalar_t*>(a.grad);
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* y = static_cast<const scalar_t*>(a.y);
  const auto* weight = static_cast<const T*>(a.weight);
  const auto* gates = static_cast<const T*>(a.gates);
  auto* dx = static_cast<scalar_t*>(a.dx);
  auto* dy = static_cast<scalar_t*>(a.dy);
  const int64_t m = a.m, hw = a.hw, yhw = a.yhw, yw = a.yw;
  const int64_t row_offset = s * yw;
  std::fill(acc, acc + m * yw, T(0));
  alignas(64) T da0[kTile], da1[kTile], z0[kTile], z1[kTile], dyu[kTile];
  alignas(64) int32_t idx[kTile];
  const int64_t pend = a.row_start[s + 1] * a.w;
  for (int64_t p0 = a.row_start[s] * a.w; p0 < pend; p0 += kTile) {
    const int64_t count = std::min(kTile, pend - p0);
    const int64_t base = n * m * hw + p0;
    for (int64_t p = 0; p < count; ++p) {
      idx[p] = a.src[p0 + p];
      da0[p] = T(0);
      da1[p] = T(0);
    }
    // Pass 1: d z_k = sum_c g_c [x; y_up]_c.
    for (int64_t c = 0; c < m; ++c) {
      const scalar_t* gc = grad + base + c * hw;
      const scalar_t* xc = x + base + c * hw;
      const scalar_t* yc = y + (n * m + c) * yhw;
      const T y0 = static_cast<T>(yc[0]);
#pragma omp simd
      for (int64_t p = 0; p < count; ++p) {
        const T g = static_cast<T>(gc[p]);
        da0[p] += g * static_cast<T>(xc[p]);
        da1[p] += g * (kBroadcast ? y0 : static_cast<T>(yc[idx[p]]));
      }
    }
    const T* gz = gates + 2 * (n * hw + p0);
    T db0 = 0, db1 = 0;
    for (int64_t p = 0; p < count; ++p) {
      z0[p] = gz[2 * p];
      z1[p] = gz[2 * p + 1];
      da0[p] = gate_logit_grad(da0[p], z0[p]);
      da1[p] = gate_logit_grad(da1[p], z1[p]);
      db0 += da0[p];
      db1 += da1[p];
    }
    partial[4 * m] += db0;
    partial[4 * m + 1] += db1;
    // Pass 2: d x, d y_up and the weight gradients of each channel.
    for (int64_t c = 0; c < m; ++c) {
      const AbfChannelWeights<T> wc = abf_channel_weights(weight, m, c);
      const scalar_t* gc = grad + base + c * hw;
      const scalar_t* xc = x + base + c * hw;
      const scalar_t* yc = y + (n * m + c) * yhw;
      scalar_t* dxc = dx + base + c * hw;
      const T y0 = static_cast<T>(yc[0]);
      T sx0 = 0, sx1 = 0, sy0 = 0, sy1 = 0, sdy = 0;
#pragma omp simd reduction(+ : sx0, sx1, sy0, sy1, sdy)
      for (int64_t p = 0; p < count; ++p) {
        const T g = static_cast<T>(gc[p]);
        const T xv = static_cast<T>(xc[p]);
        const T yv = kBroadcast ? y0 : static_cast<T>(yc[idx[p]]);
        dxc[p] = static_cast<scalar_t>(abf_grad_x(wc, g, z0[p], da0[p], da1[p]));
        const T dyv = abf_grad_y(wc, g, z1[p], da0[p], da1[p]);
        if constexpr (kBroadcast) {
          sdy += dyv;
        } else {
          dyu[p] = dyv;
        }
        sx0 += da0[p] * xv;
        sx1 += da1[p] * xv;
        sy0 += da0[p] * yv;
        sy1 += da1[p] * yv;
      }
      T* accc = acc + c * yw;
      if constexpr (kBroadcast) {
        accc[0] += sdy;
      } else {
        for (int64_t p = 0; p < count; ++p) accc[idx[p] - row_offset] += dyu[p];  // pixel order
      }
      partial[c] += sx0;
      partial[m + c] += sy0;
      partial[2 * m + c] += sx1;
      partial[3 * m + c] += sy1;
    }
  }
  for (int64_t c = 0; c < m; ++c) {
    scalar_t* dyc = dy + (n * m + c) * yhw + row_offset;
    const T* accc = acc + c * yw;
    for (int64_t k = 0; k < yw; ++k) dyc[k] = static_cast<scalar_t>(accc[k]);
  }
}

template <typename scalar_t, typename T>
void backward_task_nhwc(const AbfBackwardArgs& a, int64_t n, int64_t s, T* acc, T* partial) {
  const auto* grad = static_cast<const scalar_t*>(a.grad);
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* y = static_cast<const scalar_t*>(a.y);
  const auto* weight = static_cast<const T*>(a.weight);
  const auto* gates = static_cast<const T*>(a.gates);
  auto* dx = static_cast<scalar_t*>(a.dx);
  auto* dy = static_cast<scalar_t*>(a.dy);
  const int64_t m = a.m, hw = a.hw, yhw = a.yhw, yw = a.yw;
  const int64_t row_offset = s * yw;
  const T* w0x = weight;
  const T* w0y = weight + m;
  const T* w1x = weight + 2 * m;
  const T* w1y = weight + 3 * m;
  T* pw0x = partial;
  T* pw0y = partial + m;
  T* pw1x = partial + 2 * m;
  T* pw1y = partial + 3 * m;
  std::fill(acc, acc + m * yw, T(0));
  T db0 = 0, db1 = 0;
  const int64_t pend = a.row_start[s + 1] * a.w;
  for (int64_t p = a.row_start[s] * a.w; p < pend; ++p) {
    const int64_t pixel = n * hw + p;
    const scalar_t* gp = grad + pixel * m;
    const scalar_t* xp = x + pixel * m;
    const scalar_t* yp = y + (n * yhw + a.src[p]) * m;
    T* accp = acc + (a.src[p] - row_offset) * m;
    T d0 = 0, d1 = 0;
#pragma omp simd reduction(+ : d0, d1)
    for (int64_t c = 0; c < m; ++c) {
      const T g = static_cast<T>(gp[c]);
      d0 += g * static_cast<T>(xp[c]);
      d1 += g * static_cast<T>(yp[c]);
    }
    const T z0 = gates[2 * pixel], z1 = gates[2 * pixel + 1];
    const T da0 = gate_logit_grad(d0, z0), da1 = gate_logit_grad(d1, z1);
    db0 += da0;
    db1 += da1;
    scalar_t* dxp = dx + pixel * m;
#pragma omp simd
    for (int64_t c = 0; c < m; ++c) {
      const T g = static_cast<T>(gp[c]);
      const T xv = static_cast<T>(xp[c]), yv = static_cast<T>(yp[c]);
      dxp[c] = static_cast<scalar_t>(g * z0 + w0x[c] * da0 + w1x[c] * da1);
      accp[c] += g * z1 + w0y[c] * da0 + w1y[c] * da1;
      pw0x[c] += da0 * xv;
      pw1x[c] += da1 * xv;
      pw0y[c] += da0 * yv;
      pw1y[c] += da1 * yv;
    }
  }
  partial[4 * m] += db0;
  partial[4 * m + 1] += db1;
  scalar_t* dyr = dy + (n * yhw + row_offset) * m;
  for (int64_t k = 0; k < m * yw; ++k) dyr[k] = static_cast<scalar_t>(acc[k]);
}

template <typename scalar_t, typename T>
void backward(const AbfBackwardArgs& a) {
  const int64_t tasks = a.n * a.yh;
  const int64_t blocks = std::min(tasks, kMaxBlocks);
  const int64_t width = 4 * a.m + 2;
  std::vector<T> partials(blocks * width, T(0));
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(a.m * a.yw);
    for (int64_t b = begin; b < end; ++b) {
      T* partial = partials.data() + b * width;
      for (int64_t task = b * tasks / blocks; task < (b + 1) * tasks / blocks; ++task) {
        if (a.channels_last) {
          backward_task_nhwc<scalar_t, T>(a, task / a.yh, task % a.yh, acc.data(), partial);
        } else if (a.yhw == 1) {
          backward_task_nchw<true, scalar_t, T>(a, task / a.yh, task % a.yh, acc.data(), partial);
        } else {
          backward_task_nchw<false, scalar_t, T>(a, task / a.yh, task % a.yh, acc.data(), partial);
        }
      }
    }
  });
  auto* dweight = static_cast<T*>(a.dweight);
  auto* dbias = static_cast<T*>(a.dbias);
  for (int64_t j = 0; j < width; ++j) {
    T sum = 0;
    for (int64_t b = 0; b < blocks; ++b) sum += partials[b * width + j];
    if (j < 4 * a.m) {
      dweight[j] = sum;
    } else {
      dbias[j - 4 * a.m] = sum;
    }
  }
}

}  // namespace abf

void abf_fuse_forward_kernel(const AbfForwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "tskd_fast::abf_fuse", [&] {
    using T = at::opmath_type<scalar_t>;
    if (a.channels_last) {
      abf::forward_nhwc<scalar_t, T>(a);
    } else if (a.yhw == 1) {
      abf::forward_nchw<true, scalar_t, T>(a);
    } else {
      abf::forward_nchw<false, scalar_t, T>(a);
    }
  });
}

void abf_fuse_backward_kernel(const AbfBackwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "tskd_fast::abf_fuse_backward",
                                  [&] { abf::backward<scalar_t, at::opmath_type<scalar_t>>(a); });
}

}  // namespace tskd_fast::cpu::CPU_CAPABILITY
