#pragma once

// ReviewKD's hierarchical context loss of one stage pair on the CPU, every level in one pass
// over the features (level math: tskd_fast/hcl_math.h). A task owns whole (n, c) planes (NCHW)
// or one image's block of kHclChannelBlock channels (channels_last, the channels as vector
// lanes):
//   pass 1 reads fs and ft once, keeps d = fs - ft in a task buffer (L1/L2), sums d^2 and, per
//          level, the column sums of each window row band;
//   then the window sums, the pooled means P_ij, the loss terms and, per level, the gradient
//          coefficient of each window spread over its columns (tiny);
//   pass 2 writes the gradient from the buffered d: d / (H W) plus the coefficients of the
//          windows that hold each pixel (overlapping adaptive windows add up).
// So fs and ft are read once and the gradient written once. When no level applies (H <= every
// level) the loss is a plain sum over all elements, split into fixed chunks. Every task writes
// its own partial sum; the caller adds them in order, so results do not depend on the threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/hcl_args.h"
#include "tskd_fast/hcl_math.h"

namespace tskd_fast::cpu::CPU_CAPABILITY {

namespace hcl {

// Window bounds of every level along one axis, and for each row the range of windows holding it.
struct Axis {
  std::vector<int64_t> start, end;  // per level k: size[k] entries, at offset[k]
  std::vector<int64_t> offset;
  std::vector<int64_t> first, last;  // per level k and position u: windows [first, last) hold u

  Axis(const HclLevels& lv, int64_t size) {
    first.resize(lv.count * size);
    last.resize(lv.count * size);
    for (int k = 0; k < lv.count; ++k) {
      const int64_t l = lv.size[k];
      offset.push_back(static_cast<int64_t>(start.size()));
      for (int64_t i = 0; i < l; ++i) {
        start.push_back(window_start(i, size, l));
        end.push_back(window_end(i, size, l));
      }
      for (int64_t u = 0; u < size; ++u) {
        first[k * size + u] = first_window(u, size, l);
        last[k * size + u] = last_window(u, size, l);
      }
    }
  }
};

// One task over `lanes` interleaved planes: element (u, v, lane) at u * row + v * pixel + lane
// (NCHW: lanes 1, pixel 1; channels_last: lanes <= kHclChannelBlock, pixel C). Returns the task's
// sum of plane terms; writes the gradient when `grad`.
template <typename scalar_t, typename T>
double plane_task(const HclArgs& a, const Axis& rows, const Axis& cols, const scalar_t* fs,
                  const scalar_t* ft, scalar_t* grad, int64_t pixel, int64_t lanes,
                  std::vector<T>& d, std::vector<T>& colsum, std::vector<T>& coef) {
  const int64_t h = a.h, w = a.w, hw = h * w;
  const HclLevels& lv = a.levels;
  const int64_t band = w * lanes;  // one row of one level's window band
  std::fill(colsum.begin(), colsum.end(), T(0));
  std::fill(coef.begin(), coef.end(), T(0));
  T ssq_lanes[kHclChannelBlock] = {};
  for (int64_t u = 0; u < h; ++u) {
    T* du = d.data() + u * band;
    if (pixel == 1) {  // NCHW (one lane): a contiguous row
      const scalar_t* su = fs + u * w;
      const scalar_t* tu = ft + u * w;
      T ssq = 0;
#pragma omp simd reduction(+ : ssq)
      for (int64_t v = 0; v < w; ++v) {
        const T dv = static_cast<T>(su[v]) - static_cast<T>(tu[v]);
        du[v] = dv;
        ssq += dv * dv;
      }
      ssq_lanes[0] += ssq;
    } else {
      for (int64_t v = 0; v < w; ++v) {
        const scalar_t* sp = fs + (u * w + v) * pixel;
        const scalar_t* tp = ft + (u * w + v) * pixel;
        T* dp = du + v * lanes;
#pragma omp simd
        for (int64_t c = 0; c < lanes; ++c) {
          const T dv = static_cast<T>(sp[c]) - static_cast<T>(tp[c]);
          dp[c] = dv;
          ssq_lanes[c] += dv * dv;
        }
      }
    }
    for (int k = 0; k < lv.count; ++k) {
      for (int64_t i = rows.first[k * h + u]; i < rows.last[k * h + u]; ++i) {
        T* band_i = colsum.data() + (rows.offset[k] + i) * band;
#pragma omp simd
        for (int64_t j = 0; j < band; ++j) band_i[j] += du[j];
      }
    }
  }
  double total = 0;
  for (int64_t c = 0; c < lanes; ++c) total += static_cast<double>(ssq_lanes[c]);
  total /= static_cast<double>(hw);
  // Window sums -> pooled means -> loss terms and the gradient coefficient of each window.
  for (int k = 0; k < lv.count; ++k) {
    const int64_t l = lv.size[k];
    const T level_coef = static_cast<T>(lv.coef[k]);
    for (int64_t i = 0; i < l; ++i) {
      const int64_t r = rows.offset[k] + i;
      const int64_t height = rows.end[r] - rows.start[r];
      const T* band_i = colsum.data() + r * band;
      T* coef_i = coef.data() + r * band;
      for (int64_t j = 0; j < l; ++j) {
        const int64_t q = cols.offset[k] + j;
        const int64_t c0 = cols.start[q], c1 = cols.end[q];
        const T inv_count = T(1) / static_cast<T>(height * (c1 - c0));
        if (lanes == 1) {  // one plane: scalar sums over the window's columns
          T sum = 0;
          for (int64_t v = c0; v < c1; ++v) sum += band_i[v];
          const T mean = sum * inv_count;
          total += static_cast<double>(level_coef * mean * mean);
          const T spread = level_coef * mean * inv_count;
          for (int64_t v = c0; v < c1; ++v) coef_i[v] += spread;
          continue;
        }
        T sums[kHclChannelBlock];
        for (int64_t c = 0; c < lanes; ++c) sums[c] = T(0);
        for (int64_t v = c0; v < c1; ++v) {
#pragma omp simd
          for (int64_t c = 0; c < lanes; ++c) sums[c] += band_i[v * lanes + c];
        }
        for (int64_t c = 0; c < lanes; ++c) {
          const T mean = sums[c] * inv_count;
          total += static_cast<double>(level_coef * mean * mean);
          sums[c] = level_coef * mean * inv_count;
        }
        for (int64_t v = c0; v < c1; ++v) {
#pragma omp simd
          for (int64_t c = 0; c < lanes; ++c) coef_i[v * lanes + c] += sums[c];
        }
      }
    }
  }
  if (grad == nullptr) return total;
  const T factor = static_cast<T>(a.grad_factor);
  const T full = factor / static_cast<T>(hw);
  for (T& value : coef) value *= factor;  // the coefficients are few: scale them, not the pixels
  std::vector<T>& row = colsum;  // the column sums are spent: reuse one band as the output row
  for (int64_t u = 0; u < h; ++u) {
    const T* du = d.data() + u * band;
    T* out = row.data();
#pragma omp simd
    for (int64_t j = 0; j < band; ++j) out[j] = full * du[j];
    for (int k = 0; k < lv.count; ++k) {
      for (int64_t i = rows.first[k * h + u]; i < rows.last[k * h + u]; ++i) {
        const T* coef_i = coef.data() + (rows.offset[k] + i) * band;
#pragma omp simd
        for (int64_t j = 0; j < band; ++j) out[j] += coef_i[j];
      }
    }
    if (pixel == 1) {
      scalar_t* gu = grad + u * w;
#pragma omp simd
      for (int64_t v = 0; v < w; ++v) gu[v] = static_cast<scalar_t>(out[v]);
    } else {
      for (int64_t v = 0; v < w; ++v) {
        scalar_t* gp = grad + (u * w + v) * pixel;
        const T* op = out + v * lanes;
#pragma omp simd
        for (int64_t c = 0; c < lanes; ++c) gp[c] = static_cast<scalar_t>(op[c]);
      }
    }
  }
  return total;
}

template <typename scalar_t, typename T>
void levels_kernel(const HclArgs& a) {
  const Axis rows(a.levels, a.h), cols(a.levels, a.w);
  const int64_t windows = static_cast<int64_t>(rows.start.size());
  const auto* fs = static_cast<const scalar_t*>(a.student);
  const auto* ft = static_cast<const scalar_t*>(a.teacher);
  auto* grad = static_cast<scalar_t*>(a.grad);
  const int64_t hw = a.h * a.w;
  const int64_t blocks = a.channels_last ? (a.c + kHclChannelBlock - 1) / kHclChannelBlock : a.c;
  const int64_t lanes_max = a.channels_last ? std::min(a.c, kHclChannelBlock) : 1;
  const int64_t task_elements = hw * lanes_max;
  const int64_t grain = std::max<int64_t>(1, 16384 / task_elements);
  at::parallel_for(0, a.n * blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> d(hw * lanes_max), colsum(std::max(windows, int64_t(1)) * a.w * lanes_max),
        coef(windows * a.w * lanes_max);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, b = task % blocks;
      int64_t offset, lanes, pixel;
      if (a.channels_last) {
        const int64_t c0 = b * kHclChannelBlock;
        offset = n * hw * a.c + c0;
        lanes = std::min(kHclChannelBlock, a.c - c0);
        pixel = a.c;
      } else {
        offset = task * hw;
        lanes = 1;
        pixel = 1;
      }
      a.partials[task] =
          plane_task<scalar_t, T>(a, rows, cols, fs + offset, ft + offset,
                                  grad ? grad + offset : nullptr, pixel, lanes, d, colsum, coef);
    }
  });
}

// No level applies: sum(d^2) / (H W) over all elements and gradient factor d / (H W).
template <typename scalar_t, typename T>
void flat_kernel(const HclArgs& a) {
  const auto* fs = static_cast<const scalar_t*>(a.student);
  const auto* ft = static_cast<const scalar_t*>(a.teacher);
  auto* grad = static_cast<scalar_t*>(a.grad);
  const int64_t total = a.n * a.c * a.h * a.w;
  const int64_t chunks = (total + kHclFlatChunk - 1) / kHclFlatChunk;
  const T inv_hw = T(1) / static_cast<T>(a.h * a.w);
  const T factor = static_cast<T>(a.grad_factor) * inv_hw;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t k0 = chunk * kHclFlatChunk, k1 = std::min(total, k0 + kHclFlatChunk);
      T ssq = 0;
      if (grad != nullptr) {
#pragma omp simd reduction(+ : ssq)
        for (int64_t k = k0; k < k1; ++k) {
          const T dv = static_cast<T>(fs[k]) - static_cast<T>(ft[k]);
          ssq += dv * dv;
          grad[k] = static_cast<scalar_t>(factor * dv);
        }
      } else {
#pragma omp simd reduction(+ : ssq)
        for (int64_t k = k0; k < k1; ++k) {
          const T dv = static_cast<T>(fs[k]) - static_cast<T>(ft[k]);
          ssq += dv * dv;
        }
      }
      a.partials[chunk] = static_cast<double>(ssq * inv_hw);
    }
  });
}

}  // namespace hcl

void hcl_kernel(const HclArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "tskd_fast::hcl_loss", [&] {
    using T = at::opmath_type<scalar_t>;
    if (a.levels.count == 0) {
      hcl::flat_kernel<scalar_t, T>(a);
    } else {
      hcl::levels_kernel<scalar_t, T>(a);
    }
  });
}

}  // namespace tskd_fast::cpu::CPU_CAPABILITY
