#pragma once

// ReviewKD's attention fusion on the CPU (per-pixel math: tskd_fast/abf_math.h). The upsampled
// residual never exists as a tensor (at most one channel of one tile at a time), and the
// concatenation [x; y_up] exists only as the two channel sums of the 1x1 attention conv.
//   NCHW: a task owns a tile of whole rows of one image; the channel sums are vectors over the
//         tile (pass 1 over the channels), then the fused tile is written (pass 2; the x tile is
//         still in L2). Each channel's residual is upsampled into a tile buffer first: a
//         per-pixel gather is scalar loads on AVX2 and cost more than the arithmetic. Each pass
//         upsamples it again rather than keeping every channel's: that would be a second buffer
//         the size of the x tile, for a widening that costs a few vector stores per row.
//   NHWC (channels_last): a task owns pixels; each pixel's channels are contiguous, so the channel
//         sums are vector reductions and the output a vector expression.
// Backward: a task owns whole rows of the residual, i.e. every pixel of x that reads them, so the
// adjoint of the upsampling (a sum over those pixels) accumulates without races or atomics in a
// fixed order; d weight and d bias are summed per fixed block of tasks and the blocks in order,
// so the result does not depend on the number of threads. On NCHW maps a task takes as many
// residual rows as fit one tile (abf_tile_pixels), so that small maps still give long
// vector loops, and its d y_up is summed over rows and columns with vector adds, not scattered.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/abf_args.h"
#include "tskd_fast/abf_math.h"

namespace tskd_fast::cpu::CPU_CAPABILITY {

namespace abf {

constexpr int64_t kMaxBlocks = 64;
constexpr int64_t kTaskElements = 16384;  // elements of x per parallel chunk, at least

// Rows of x per NCHW tile, and the most pixels a tile can hold.
inline int64_t tile_rows(const AbfGeometry& g) { return std::max<int64_t>(1, g.tile_pixels / g.w); }
inline int64_t max_tile_pixels(const AbfGeometry& g) { return tile_rows(g) * g.w; }

// The residual row that row u of x reads.
inline int64_t residual_row(const AbfGeometry& g, int64_t u) { return g.src[u * g.w] / g.yw; }

// yu = y_c upsampled over the rows [u0, u1) of x, as the opmath type. Each residual row is
// widened once and stored to every row of x that reads it; equal widths and the exact 2x widen
// with vector loads. The tile loops then read y_up contiguously: a per-pixel gather is scalar
// loads on AVX2 and cost more than the arithmetic.
template <typename scalar_t, typename T>
void upsample_tile(const AbfGeometry& g, const scalar_t* yc, int64_t u0, int64_t u1, T* yu) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t kLanes = std::is_same_v<scalar_t, T> ? Vec::size() : 0;  // 0: no vector path
  const int64_t w = g.w, yw = g.yw;
  for (int64_t u = u0; u < u1;) {
    const int64_t s = residual_row(g, u);
    const int64_t end = std::min(u1, g.row_start[s + 1]);
    const int64_t copies = end - u;
    const scalar_t* yr = yc + s * yw;
    T* row = yu + (u - u0) * w;
    if (w == yw) {
      int64_t v = 0;
      if constexpr (kLanes > 0) {
        for (; v + kLanes <= w; v += kLanes) {
          const Vec val = Vec::loadu(yr + v);
          for (int64_t k = 0; k < copies; ++k) val.store(row + k * w + v);
        }
      }
      for (; v < w; ++v) {
        for (int64_t k = 0; k < copies; ++k) row[k * w + v] = static_cast<T>(yr[v]);
      }
    } else if (w == 2 * yw) {
      int64_t j = 0;
      if constexpr (kLanes > 0) {
        for (; j + kLanes <= yw; j += kLanes) {
          const Vec val = Vec::loadu(yr + j);
          const auto [lo, hi] = at::vec::interleave2(val, val);
          for (int64_t k = 0; k < copies; ++k) {
            lo.store(row + k * w + 2 * j);
            hi.store(row + k * w + 2 * j + kLanes);
          }
        }
      }
      for (; j < yw; ++j) {
        const T val = static_cast<T>(yr[j]);
        for (int64_t k = 0; k < copies; ++k) row[k * w + 2 * j] = row[k * w + 2 * j + 1] = val;
      }
    } else {
      for (int64_t v = 0; v < w; ++v) {
        const T val = static_cast<T>(yr[g.src[v]]);  // row 0 of src: the column
        for (int64_t k = 0; k < copies; ++k) row[k * w + v] = val;
      }
    }
    u = end;
  }
}

// A task owns a tile of whole rows of one image. kBroadcast: a 1x1 residual (yhw == 1), one value
// per channel.
template <bool kBroadcast, typename scalar_t, typename T>
void forward_nchw(const AbfForwardArgs& a) {
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* y = static_cast<const scalar_t*>(a.y);
  const auto* weight = static_cast<const T*>(a.weight);
  const auto* bias = static_cast<const T*>(a.bias);
  auto* out = static_cast<scalar_t*>(a.out);
  auto* gates = static_cast<T*>(a.gates);
  const int64_t m = a.m, hw = a.hw, yhw = a.yhw, w = a.w, h = hw / w;
  const int64_t rows = tile_rows(a), tiles = (h + rows - 1) / rows;
  const int64_t grain = std::max<int64_t>(1, kTaskElements / (rows * w * m));
  at::parallel_for(0, a.n * tiles, grain, [&](int64_t begin, int64_t end) {
    const int64_t capacity = max_tile_pixels(a);
    std::vector<T> z0_buf(capacity), z1_buf(capacity), yu_buf(kBroadcast ? 0 : capacity);
    T *z0 = z0_buf.data(), *z1 = z1_buf.data(), *yu = yu_buf.data();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / tiles, u0 = (task % tiles) * rows, u1 = std::min(u0 + rows, h);
      const int64_t p0 = u0 * w, count = (u1 - u0) * w;
      const scalar_t* xn = x + n * m * hw + p0;
      const scalar_t* yn = y + n * m * yhw;
      scalar_t* on = out + n * m * hw + p0;
      std::fill(z0, z0 + count, bias[0]);
      std::fill(z1, z1 + count, bias[1]);
      for (int64_t c = 0; c < m; ++c) {
        const AbfChannelWeights<T> wc = abf_channel_weights(weight, m, c);
        const scalar_t* xc = xn + c * hw;
        const T y0 = static_cast<T>(yn[c * yhw]);
        if constexpr (!kBroadcast) upsample_tile(a, yn + c * yhw, u0, u1, yu);
#pragma omp simd
        for (int64_t p = 0; p < count; ++p) {
          const T xv = static_cast<T>(xc[p]), yv = kBroadcast ? y0 : yu[p];
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
        scalar_t* oc = on + c * hw;
        const T y0 = static_cast<T>(yn[c * yhw]);
        if constexpr (!kBroadcast) upsample_tile(a, yn + c * yhw, u0, u1, yu);
#pragma omp simd
        for (int64_t p = 0; p < count; ++p) {
          const T yv = kBroadcast ? y0 : yu[p];
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

// Per-thread buffers of the NCHW backward: per-pixel values of one tile and the group's d y_up.
template <typename T>
struct BackwardScratch {
  std::vector<T> da0, da1, z0, z1, yu, dyu, rowsum, acc;
  BackwardScratch(const AbfBackwardArgs& a, bool nchw) : acc(a.m * a.yw * a.max_group_rows) {
    if (!nchw) return;
    for (auto* v : {&da0, &da1, &z0, &z1, &yu, &dyu}) v->resize(max_tile_pixels(a));
    rowsum.resize(a.w);
  }
};

// acc[j] += the sum of r[v] over the columns v of x that read residual column j. Nearest
// upsampling makes those columns one run, [col_start[j], col_start[j + 1]); equal widths and the
// exact 2x are vector loops.
template <typename T>
void add_columns(const AbfBackwardArgs& a, const T* r, T* acc) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t kLanes = Vec::size();
  const int64_t yw = a.yw;
  if (a.w == yw) {
#pragma omp simd
    for (int64_t j = 0; j < yw; ++j) acc[j] += r[j];
  } else if (a.w == 2 * yw) {
    int64_t j = 0;
    for (; j + kLanes <= yw; j += kLanes) {
      const auto [even, odd] =
          at::vec::deinterleave2(Vec::loadu(r + 2 * j), Vec::loadu(r + 2 * j + kLanes));
      (Vec::loadu(acc + j) + even + odd).store(acc + j);
    }
    for (; j < yw; ++j) acc[j] += r[2 * j] + r[2 * j + 1];
  } else {
    for (int64_t j = 0; j < yw; ++j) {
      T sum = 0;
      for (int64_t v = a.col_start[j]; v < a.col_start[j + 1]; ++v) sum += r[v];
      acc[j] += sum;
    }
  }
}

// d y_up of one channel over a tile of whole rows [u0, u1) of x, added to the group's
// accumulator `acc` (rows of yw, the first for residual row s0): the rows of x that read one
// residual row are summed first, then their columns.
template <typename T>
void add_tile_to_residual(const AbfBackwardArgs& a, const T* dyu, int64_t u0, int64_t u1,
                          int64_t s0, T* rowsum, T* acc) {
  const int64_t w = a.w;
  for (int64_t u = u0; u < u1;) {
    const int64_t s = residual_row(a, u);
    const int64_t end = std::min(u1, a.row_start[s + 1]);
    const T* r = dyu + (u - u0) * w;
    if (end - u > 1) {
#pragma omp simd
      for (int64_t v = 0; v < w; ++v) rowsum[v] = r[v] + r[w + v];
      for (int64_t k = u + 2; k < end; ++k) {
        const T* rk = dyu + (k - u0) * w;
#pragma omp simd
        for (int64_t v = 0; v < w; ++v) rowsum[v] += rk[v];
      }
      r = rowsum;
    }
    add_columns(a, r, acc + (s - s0) * a.yw);
    u = end;
  }
}

// One task: image n, residual rows [s0, s1), i.e. every pixel of x that reads them (whole rows
// of x, taken in tiles of whole rows). `partial` (4M + 2) collects the block's d weight and
// d bias. kBroadcast as for forward_nchw.
template <bool kBroadcast, typename scalar_t, typename T>
void backward_group_nchw(const AbfBackwardArgs& a, int64_t n, int64_t s0, int64_t s1,
                         BackwardScratch<T>& buf, T* partial) {
  const auto* grad = static_cast<const scalar_t*>(a.grad);
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* y = static_cast<const scalar_t*>(a.y);
  const auto* weight = static_cast<const T*>(a.weight);
  const auto* gates = static_cast<const T*>(a.gates);
  auto* dx = static_cast<scalar_t*>(a.dx);
  auto* dy = static_cast<scalar_t*>(a.dy);
  const int64_t m = a.m, hw = a.hw, yhw = a.yhw, yw = a.yw, w = a.w;
  const int64_t group_yhw = (s1 - s0) * yw;
  T* acc = buf.acc.data();
  T *da0 = buf.da0.data(), *da1 = buf.da1.data(), *z0 = buf.z0.data(), *z1 = buf.z1.data();
  T *yu = buf.yu.data(), *dyu = buf.dyu.data();
  std::fill(acc, acc + m * group_yhw, T(0));
  const int64_t rows = tile_rows(a);
  const int64_t u_end = a.row_start[s1];
  for (int64_t u0 = a.row_start[s0]; u0 < u_end; u0 += rows) {
    const int64_t u1 = std::min(u0 + rows, u_end);
    const int64_t p0 = u0 * w, count = (u1 - u0) * w;
    const int64_t base = n * m * hw + p0;
    std::fill(da0, da0 + count, T(0));
    std::fill(da1, da1 + count, T(0));
    // Pass 1: d z_k = sum_c g_c [x; y_up]_c.
    for (int64_t c = 0; c < m; ++c) {
      const scalar_t* gc = grad + base + c * hw;
      const scalar_t* xc = x + base + c * hw;
      const scalar_t* yc = y + (n * m + c) * yhw;
      const T y0 = static_cast<T>(yc[0]);
      if constexpr (!kBroadcast) upsample_tile(a, yc, u0, u1, yu);
#pragma omp simd
      for (int64_t p = 0; p < count; ++p) {
        const T g = static_cast<T>(gc[p]);
        da0[p] += g * static_cast<T>(xc[p]);
        da1[p] += g * (kBroadcast ? y0 : yu[p]);
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
      if constexpr (!kBroadcast) upsample_tile(a, yc, u0, u1, yu);
      T sx0 = 0, sx1 = 0, sy0 = 0, sy1 = 0, sdy = 0;
#pragma omp simd reduction(+ : sx0, sx1, sy0, sy1, sdy)
      for (int64_t p = 0; p < count; ++p) {
        const T g = static_cast<T>(gc[p]);
        const T xv = static_cast<T>(xc[p]);
        const T yv = kBroadcast ? y0 : yu[p];
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
      if constexpr (kBroadcast) {
        acc[c] += sdy;
      } else {
        add_tile_to_residual(a, dyu, u0, u1, s0, buf.rowsum.data(), acc + c * group_yhw);
      }
      partial[c] += sx0;
      partial[m + c] += sy0;
      partial[2 * m + c] += sx1;
      partial[3 * m + c] += sy1;
    }
  }
  for (int64_t c = 0; c < m; ++c) {
    scalar_t* dyc = dy + (n * m + c) * yhw + s0 * yw;
    const T* accc = acc + c * group_yhw;
    for (int64_t k = 0; k < group_yhw; ++k) dyc[k] = static_cast<scalar_t>(accc[k]);
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
  const int64_t tasks = a.n * a.groups;
  const int64_t blocks = std::min(tasks, kMaxBlocks);
  const int64_t width = 4 * a.m + 2;
  std::vector<T> partials(blocks * width, T(0));
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    BackwardScratch<T> buf(a, !a.channels_last);
    for (int64_t b = begin; b < end; ++b) {
      T* partial = partials.data() + b * width;
      for (int64_t task = b * tasks / blocks; task < (b + 1) * tasks / blocks; ++task) {
        const int64_t n = task / a.groups, g = task % a.groups;
        const int64_t s0 = a.group_start[g], s1 = a.group_start[g + 1];
        if (a.channels_last) {
          for (int64_t s = s0; s < s1; ++s)
            backward_task_nhwc<scalar_t, T>(a, n, s, buf.acc.data(), partial);
        } else if (a.yhw == 1) {
          backward_group_nchw<true, scalar_t, T>(a, n, s0, s1, buf, partial);
        } else {
          backward_group_nchw<false, scalar_t, T>(a, n, s0, s1, buf, partial);
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
