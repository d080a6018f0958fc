#pragma once

// ReviewKD's hierarchical context loss of one stage pair on the CPU, every level in one pass
// over the features (level math: tskd_fast/hcl_math.h). A task owns one, 16 or 64 whole (n, c)
// planes (NCHW, hcl_task_lanes; several are transposed so that the planes become vector lanes) or
// one image's block of kHclChannelBlock channels (channels_last, the channels as vector lanes).
// Both axes are split into classes at every window bound of every level (Axis below):
//   pass 1 reads fs and ft once, keeps d = fs - ft in a task buffer (L1/L2), sums d^2 and the
//          column sums of each row class (one add per element);
//   then the class-block sums, per level and window the pooled mean P_ij, its loss term and its
//          gradient coefficient added to the window's class blocks (tiny);
//   pass 2 writes the gradient from the buffered d: d / (H W) plus its class block's
//          coefficient (one multiply-add per element; overlapping windows are already summed).
// So fs and ft are read once and the gradient written once. When no level applies (H <= every
// level) the loss is a plain sum over all elements, split into fixed chunks. Every task writes
// its own partial sum; the caller adds them in order, so results do not depend on the threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/hcl_args.h"
#include "tskd_fast/hcl_math.h"

namespace tskd_fast::cpu::CPU_CAPABILITY {

namespace hcl {

// One axis split into classes at every window bound of every level, so that each window is a run
// of whole classes and every position of a class lies in the same windows. A plane then reduces
// to class-block sums (one add per element) and the gradient to one coefficient per class block
// (one multiply-add per element), however many levels and overlapping windows there are.
struct Axis {
  std::vector<int64_t> bound;          // class q covers [bound[q], bound[q + 1])
  std::vector<int64_t> class_of;       // per position
  std::vector<int64_t> offset;         // per level k: index of its window 0 below
  std::vector<int64_t> first, last;    // per window: classes [first, last)
  std::vector<double> inverse_length;  // per window: 1 / its number of positions

  Axis(const HclLevels& lv, int64_t size) : class_of(size) {
    std::vector<bool> cut(size + 1, false);
    cut[0] = cut[size] = true;
    for (int k = 0; k < lv.count; ++k) {
      for (int64_t i = 0; i < lv.size[k]; ++i) {
        cut[window_start(i, size, lv.size[k])] = true;
        cut[window_end(i, size, lv.size[k])] = true;
      }
    }
    std::vector<int64_t> class_at(size + 1);
    for (int64_t u = 0; u <= size; ++u) {
      if (cut[u]) bound.push_back(u);
      class_at[u] = static_cast<int64_t>(bound.size()) - 1;
    }
    for (int64_t u = 0; u < size; ++u) class_of[u] = class_at[u];
    for (int k = 0; k < lv.count; ++k) {
      offset.push_back(static_cast<int64_t>(first.size()));
      for (int64_t i = 0; i < lv.size[k]; ++i) {
        const int64_t s = window_start(i, size, lv.size[k]), e = window_end(i, size, lv.size[k]);
        first.push_back(class_at[s]);
        last.push_back(class_at[e]);
        inverse_length.push_back(1.0 / static_cast<double>(e - s));
      }
    }
  }
  int64_t classes() const { return static_cast<int64_t>(bound.size()) - 1; }
};

// The plane stride of a multi-plane task's plane-major buffer: hw plus a pad, so
// that the 16 rows of a transpose never sit a multiple of 4 KiB apart (they would share one L1
// set; benchmarks/README.md, "Kernel design measurements").
inline int64_t plane_stride(int64_t hw) { return hw + kHclChannelBlock; }

// Per-task scratch, the interleaved parts with `stride` lanes (the task's lanes, hcl_task_lanes:
// channels_last channels, or NCHW planes, 1 for one-plane tasks): d in the input's layout
// (multi-plane NCHW tasks: planes plane_stride apart; one-plane tasks: two planes, the one whose
// gradient is written and the next, see plane_range), d with the planes interleaved (multi-plane
// NCHW tasks), the row-class column sums (two sets for one-plane tasks), the class-block sums and
// gradient coefficients, and one expanded coefficient row (not used by multi-plane NCHW tasks,
// which form the gradient interleaved).
template <typename T>
struct Scratch {
  std::vector<T> d, interleaved, band, block, coef, row;
  Scratch(const HclArgs& a, const Axis& rows, const Axis& cols, int64_t stride)
      : d(plane_stride(a.h * a.w) * (stride > 1 ? stride : 2)),
        interleaved(!a.channels_last && stride > 1 ? a.h * a.w * stride : 0),
        band(rows.classes() * a.w * (stride > 1 ? stride : 2)),
        block(rows.classes() * cols.classes() * stride),
        coef(rows.classes() * cols.classes() * stride),
        row(a.channels_last || stride == 1 ? a.w * stride : 0) {}
};

// dst[0, kN) = src[0, kN) by vector loads and stores. GCC turns a plain copy loop (and std::copy)
// into a call of memmove, whose dispatch costs more than these copies of a few vectors.
template <int64_t kN, typename T>
inline void copy_lanes(const T* src, T* dst) {
  using Vec = at::vec::Vectorized<T>;
  if constexpr (kN % Vec::size() == 0) {
    for (int64_t k = 0; k < kN; k += Vec::size()) Vec::loadu(src + k).store(dst + k);
  } else {
    for (int64_t k = 0; k < kN; ++k) dst[k] = src[k];
  }
}

// From the class-block sums of `lanes` planes (s.block, lanes interleaved): per level and window
// the pooled mean, its loss term, and (when `grad`) its gradient coefficient, scaled by the
// gradient factor and added to every class block of the window (s.coef). Vectorised over the
// lanes, so its cost per plane shrinks with the lane count. Returns the sum of the loss terms.
template <int64_t kStride, typename T>
double window_terms(const HclArgs& a, const Axis& rows, const Axis& cols, int64_t lanes, bool grad,
                    Scratch<T>& s) {
  const int64_t col_classes = cols.classes();
  const HclLevels& lv = a.levels;
  const T factor = static_cast<T>(a.grad_factor);
  if (grad) std::fill(s.coef.begin(), s.coef.end(), T(0));
  T terms[kStride] = {};
  for (int k = 0; k < lv.count; ++k) {
    const T level_coef = static_cast<T>(lv.coef[k]);
    for (int64_t i = 0; i < lv.size[k]; ++i) {
      const int64_t wr = rows.offset[k] + i;
      for (int64_t j = 0; j < lv.size[k]; ++j) {
        const int64_t wc = cols.offset[k] + j;
        const T inv_count = static_cast<T>(rows.inverse_length[wr] * cols.inverse_length[wc]);
        // Started from the window's first block: a zero-filled array became `rep stos`, whose
        // start-up cost was a quarter of this function's time at 8x8.
        const int64_t q0 = rows.first[wr], p0 = cols.first[wc];
        T sums[kStride];
        copy_lanes<kStride>(s.block.data() + (q0 * col_classes + p0) * kStride, sums);
        for (int64_t q = q0; q < rows.last[wr]; ++q) {
          for (int64_t p = q == q0 ? p0 + 1 : p0; p < cols.last[wc]; ++p) {
            const T* b = s.block.data() + (q * col_classes + p) * kStride;
#pragma omp simd
            for (int64_t c = 0; c < kStride; ++c) sums[c] += b[c];
          }
        }
#pragma omp simd
        for (int64_t c = 0; c < kStride; ++c) {
          const T mean = sums[c] * inv_count;
          terms[c] += level_coef * mean * mean;
          sums[c] = factor * level_coef * mean * inv_count;
        }
        if (!grad) continue;
        for (int64_t q = rows.first[wr]; q < rows.last[wr]; ++q) {
          for (int64_t p = cols.first[wc]; p < cols.last[wc]; ++p) {
            T* b = s.coef.data() + (q * col_classes + p) * kStride;
#pragma omp simd
            for (int64_t c = 0; c < kStride; ++c) b[c] += sums[c];
          }
        }
      }
    }
  }
  double total = 0;
  for (int64_t c = 0; c < lanes; ++c) total += static_cast<double>(terms[c]);
  return total;
}

// From the row-class column sums of `lanes` interleaved planes (bands[(q * w + v) * kStride +
// lane]): the class-block sums, then the window terms (window_terms).
template <int64_t kStride, typename T>
double reduce_bands(const HclArgs& a, const Axis& rows, const Axis& cols, int64_t lanes,
                    const T* bands, bool grad, Scratch<T>& s) {
  const int64_t span = a.w * kStride;
  const int64_t col_classes = cols.classes();
  for (int64_t q = 0; q < rows.classes(); ++q) {
    const T* band = bands + q * span;
    for (int64_t p = 0; p < col_classes; ++p) {
      T* out = s.block.data() + (q * col_classes + p) * kStride;
      copy_lanes<kStride>(band + cols.bound[p] * kStride, out);
      for (int64_t v = cols.bound[p] + 1; v < cols.bound[p + 1]; ++v) {
#pragma omp simd
        for (int64_t c = 0; c < kStride; ++c) out[c] += band[v * kStride + c];
      }
    }
  }
  return window_terms<kStride>(a, rows, cols, lanes, grad, s);
}

// The reduction of `lanes` interleaved planes, dt[(u * w + v) * lanes + lane]: the column sums of
// each row class, then reduce_bands. Vector work over the lanes throughout, so small maps cost
// little per plane.
template <int64_t kStride, typename T>
double reduce_windows(const HclArgs& a, const Axis& rows, const Axis& cols, int64_t lanes,
                      const T* dt, bool grad, Scratch<T>& s) {
  const int64_t span = a.w * kStride;
  for (int64_t q = 0; q < rows.classes(); ++q) {
    T* band = s.band.data() + q * span;
    const T* first = dt + rows.bound[q] * span;
    for (int64_t v = 0; v < a.w; ++v) copy_lanes<kStride>(first + v * kStride, band + v * kStride);
    for (int64_t u = rows.bound[q] + 1; u < rows.bound[q + 1]; ++u) {
      const T* du = dt + u * span;
#pragma omp simd
      for (int64_t j = 0; j < span; ++j) band[j] += du[j];
    }
  }
  return reduce_bands<kStride>(a, rows, cols, lanes, s.band.data(), grad, s);
}

// d = fs - ft over n contiguous elements; returns sum(d^2). Kept out of line: inlined into the
// parallel loop's body, GCC 12 leaves this simd reduction scalar.
template <typename scalar_t, typename T>
__attribute__((noinline)) T subtract(const scalar_t* fs, const scalar_t* ft, T* d, int64_t n) {
  T ssq = 0;
#pragma omp simd reduction(+ : ssq)
  for (int64_t k = 0; k < n; ++k) {
    const T dv = static_cast<T>(fs[k]) - static_cast<T>(ft[k]);
    d[k] = dv;
    ssq += dv * dv;
  }
  return ssq;
}

// grad = factor (fs - ft) over n contiguous elements; returns sum((fs - ft)^2). Out of line for
// the same reason as subtract (inlined, its loop is scalar).
template <typename scalar_t, typename T>
__attribute__((noinline)) T subtract_scaled(const scalar_t* fs, const scalar_t* ft, scalar_t* grad,
                                            T factor, int64_t n) {
  T ssq = 0;
#pragma omp simd reduction(+ : ssq)
  for (int64_t k = 0; k < n; ++k) {
    const T dv = static_cast<T>(fs[k]) - static_cast<T>(ft[k]);
    ssq += dv * dv;
    grad[k] = static_cast<scalar_t>(factor * dv);
  }
  return ssq;
}

template <typename scalar_t, typename T>
__attribute__((noinline)) T sum_of_squares(const scalar_t* fs, const scalar_t* ft, int64_t n) {
  T ssq = 0;
#pragma omp simd reduction(+ : ssq)
  for (int64_t k = 0; k < n; ++k) {
    const T dv = static_cast<T>(fs[k]) - static_cast<T>(ft[k]);
    ssq += dv * dv;
  }
  return ssq;
}

// NCHW, one plane per task (large maps). A thread's consecutive planes are pipelined: one pass
// writes plane p's gradient and reads plane p + 1 (plane_rows), then plane p + 1's window work
// runs on its band sums. Reads then overlap writes, as in a plain elementwise op; a read pass and
// a write pass per plane in turn ran at about half the bandwidth of torch.sub over the same bytes.

// Row by row: the gradient of a plane from its buffered d and its class-block coefficients (when
// `grad`), and pass 1 of the next plane (when `fs_next`): d_next = fs_next - ft_next and the column
// sums of each row class (bands_next, w per class). Returns the next plane's sum(d^2). Out of line
// for the reason given at subtract.
template <typename scalar_t, typename T>
__attribute__((noinline)) T plane_rows(const Axis& rows, const Axis& cols, int64_t w, const T* d,
                                       const T* coef, T full, T* row, scalar_t* grad,
                                       const scalar_t* fs_next, const scalar_t* ft_next, T* d_next,
                                       T* bands_next) {
  const int64_t col_classes = cols.classes();
  T ssq = 0;
  for (int64_t q = 0; q < rows.classes(); ++q) {
    if (grad != nullptr) {
      for (int64_t p = 0; p < col_classes; ++p) {
        std::fill(row + cols.bound[p], row + cols.bound[p + 1], coef[q * col_classes + p]);
      }
    }
    T* band = bands_next + q * w;
    for (int64_t u = rows.bound[q]; u < rows.bound[q + 1]; ++u) {
      if (grad != nullptr) {
        const T* du = d + u * w;
        scalar_t* gu = grad + u * w;
#pragma omp simd
        for (int64_t v = 0; v < w; ++v) gu[v] = static_cast<scalar_t>(full * du[v] + row[v]);
      }
      if (fs_next == nullptr) continue;
      const scalar_t* su = fs_next + u * w;
      const scalar_t* tu = ft_next + u * w;
      T* dn = d_next + u * w;
      T part = 0;
      if (u == rows.bound[q]) {
#pragma omp simd reduction(+ : part)
        for (int64_t v = 0; v < w; ++v) {
          const T dv = static_cast<T>(su[v]) - static_cast<T>(tu[v]);
          dn[v] = dv;
          band[v] = dv;
          part += dv * dv;
        }
      } else {
#pragma omp simd reduction(+ : part)
        for (int64_t v = 0; v < w; ++v) {
          const T dv = static_cast<T>(su[v]) - static_cast<T>(tu[v]);
          dn[v] = dv;
          band[v] += dv;
          part += dv * dv;
        }
      }
      ssq += part;
    }
  }
  return ssq;
}

// Planes [begin, end), each its own task (partial sum), pipelined as described above.
template <typename scalar_t, typename T>
void plane_range(const HclArgs& a, const Axis& rows, const Axis& cols, const scalar_t* fs,
                 const scalar_t* ft, scalar_t* grad, int64_t begin, int64_t end, Scratch<T>& s) {
  const int64_t w = a.w, hw = a.h * w;
  const T full = static_cast<T>(a.grad_factor) / static_cast<T>(hw);
  T* d[2] = {s.d.data(), s.d.data() + hw};
  T* bands[2] = {s.band.data(), s.band.data() + rows.classes() * w};
  T ssq = plane_rows<scalar_t, T>(rows, cols, w, nullptr, nullptr, full, nullptr, nullptr,
                                  fs + begin * hw, ft + begin * hw, d[0], bands[0]);
  for (int64_t p = begin; p < end; ++p) {
    const int64_t cur = (p - begin) & 1;
    a.partials[p] = static_cast<double>(ssq) / static_cast<double>(hw) +
                    reduce_bands<1>(a, rows, cols, 1, bands[cur], grad != nullptr, s);
    const bool next = p + 1 < end;
    ssq = plane_rows<scalar_t, T>(rows, cols, w, d[cur], s.coef.data(), full, s.row.data(),
                                  grad != nullptr ? grad + p * hw : nullptr,
                                  next ? fs + (p + 1) * hw : nullptr,
                                  next ? ft + (p + 1) * hw : nullptr, d[1 - cur], bands[1 - cur]);
  }
}

// dst[k * kLanes + r] = src[r * ld + k] for the kLanes planes of src (k < hw), and (kToPlanes)
// the inverse; vector transposes of 16 x 16 blocks, the last hw % 16 positions scalar.
template <int64_t kLanes, bool kToPlanes, typename T>
void transpose_planes(const T* src, T* dst, int64_t hw, int64_t ld) {
  constexpr int64_t kTile = 16;
  static_assert(kLanes % kTile == 0, "planes are transposed 16 at a time");
  const int64_t full = hw - hw % kTile;
  for (int64_t r0 = 0; r0 < kLanes; r0 += kTile) {
    for (int64_t k = 0; k < full; k += kTile) {
      if constexpr (kToPlanes) {
        at::vec::transpose_mxn<T, kTile, kTile>(src + k * kLanes + r0, kLanes, dst + r0 * ld + k,
                                                ld);
      } else {
        at::vec::transpose_mxn<T, kTile, kTile>(src + r0 * ld + k, ld, dst + k * kLanes + r0,
                                                kLanes);
      }
    }
  }
  for (int64_t k = full; k < hw; ++k) {
    for (int64_t r = 0; r < kLanes; ++r) {
      if constexpr (kToPlanes) {
        dst[r * ld + k] = src[k * kLanes + r];
      } else {
        dst[k * kLanes + r] = src[r * ld + k];
      }
    }
  }
}

// NCHW, kLanes consecutive planes per task (small maps, hcl_task_lanes), so that the window work
// runs across the planes as vector lanes: pass 1 per flat plane, then d transposed to
// position-major (the planes interleaved); the gradient is formed interleaved (one multiply-add
// per element with its class block's coefficients) and transposed back, straight into the
// output when it has the compute type and the task all kLanes planes. `block_of` maps each
// position to its class block. Planes past `planes` (the last task) hold stale values that are
// never summed.
template <int64_t kLanes, typename scalar_t, typename T>
double planes_task(const HclArgs& a, const Axis& rows, const Axis& cols, const int32_t* block_of,
                   const scalar_t* fs, const scalar_t* ft, scalar_t* grad, int64_t planes,
                   Scratch<T>& s) {
  const int64_t hw = a.h * a.w, ld = plane_stride(hw);
  T ssq = 0;
  for (int64_t p = 0; p < planes; ++p) {
    ssq += subtract(fs + p * hw, ft + p * hw, s.d.data() + p * ld, hw);
  }
  T* dt = s.interleaved.data();
  transpose_planes<kLanes, false>(s.d.data(), dt, hw, ld);
  double total = static_cast<double>(ssq) / static_cast<double>(hw);
  total += reduce_windows<kLanes>(a, rows, cols, planes, dt, grad != nullptr, s);
  if (grad == nullptr) return total;
  const T full = static_cast<T>(a.grad_factor) / static_cast<T>(hw);
  for (int64_t k = 0; k < hw; ++k) {
    const T* coef = s.coef.data() + block_of[k] * kLanes;
    T* g = dt + k * kLanes;
#pragma omp simd
    for (int64_t c = 0; c < kLanes; ++c) g[c] = full * g[c] + coef[c];
  }
  if constexpr (std::is_same_v<scalar_t, T>) {
    if (planes == kLanes) {
      transpose_planes<kLanes, true>(dt, grad, hw, hw);
      return total;
    }
  }
  transpose_planes<kLanes, true>(dt, s.d.data(), hw, ld);
  for (int64_t p = 0; p < planes; ++p) {
    const T* gp = s.d.data() + p * ld;
    scalar_t* out = grad + p * hw;
#pragma omp simd
    for (int64_t k = 0; k < hw; ++k) out[k] = static_cast<scalar_t>(gp[k]);
  }
  return total;
}

// channels_last: a task owns one image's block of `lanes` <= kHclChannelBlock channels (element
// (u, v, lane) at (u * w + v) * C + lane), buffered with kHclChannelBlock lanes so that every
// vector loop has a fixed length (lanes past `lanes` hold stale values and are never summed).
template <typename scalar_t, typename T>
double channels_task(const HclArgs& a, const Axis& rows, const Axis& cols, const scalar_t* fs,
                     const scalar_t* ft, scalar_t* grad, int64_t lanes, Scratch<T>& s) {
  constexpr int64_t kStride = kHclChannelBlock;
  const int64_t h = a.h, w = a.w, pixel = a.c;
  const int64_t span = w * kStride;  // one buffered row
  const int64_t col_classes = cols.classes();
  T ssq[kStride] = {};
  for (int64_t k = 0; k < h * w; ++k) {
    const scalar_t* sp = fs + k * pixel;
    const scalar_t* tp = ft + k * pixel;
    T* dp = s.d.data() + k * kStride;
#pragma omp simd
    for (int64_t c = 0; c < lanes; ++c) {
      const T dv = static_cast<T>(sp[c]) - static_cast<T>(tp[c]);
      dp[c] = dv;
      ssq[c] += dv * dv;
    }
  }
  double total = 0;
  for (int64_t c = 0; c < lanes; ++c) total += static_cast<double>(ssq[c]);
  total /= static_cast<double>(h * w);
  total += reduce_windows<kStride>(a, rows, cols, lanes, s.d.data(), grad != nullptr, s);
  if (grad == nullptr) return total;
  const T full = static_cast<T>(a.grad_factor) / static_cast<T>(h * w);
  T* row = s.row.data();
  for (int64_t q = 0; q < rows.classes(); ++q) {
    for (int64_t v = 0; v < w; ++v) {
      const T* b = s.coef.data() + (q * col_classes + cols.class_of[v]) * kStride;
      std::copy(b, b + kStride, row + v * kStride);
    }
    for (int64_t u = rows.bound[q]; u < rows.bound[q + 1]; ++u) {
      const T* du = s.d.data() + u * span;
      for (int64_t v = 0; v < w; ++v) {
        scalar_t* gp = grad + (u * w + v) * pixel;
        const T* dp = du + v * kStride;
        const T* rp = row + v * kStride;
#pragma omp simd
        for (int64_t c = 0; c < lanes; ++c) gp[c] = static_cast<scalar_t>(full * dp[c] + rp[c]);
      }
    }
  }
  return total;
}

template <typename scalar_t, typename T>
void levels_kernel(const HclArgs& a) {
  const Axis rows(a.levels, a.h), cols(a.levels, a.w);
  const auto* fs = static_cast<const scalar_t*>(a.student);
  const auto* ft = static_cast<const scalar_t*>(a.teacher);
  auto* grad = static_cast<scalar_t*>(a.grad);
  const int64_t hw = a.h * a.w;
  const int64_t lanes = hcl_task_lanes(a);
  const int64_t stride = a.channels_last ? kHclChannelBlock : lanes;
  const int64_t tasks = hcl_partial_count(a);
  const int64_t grain = std::max<int64_t>(1, 16384 / (hw * lanes));
  std::vector<int32_t> block_of(!a.channels_last && lanes > 1 ? hw : 0);
  for (int64_t k = 0; k < static_cast<int64_t>(block_of.size()); ++k) {
    block_of[k] =
        static_cast<int32_t>(rows.class_of[k / a.w] * cols.classes() + cols.class_of[k % a.w]);
  }
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    Scratch<T> scratch(a, rows, cols, stride);
    if (!a.channels_last) {
      if (lanes == 1) {
        plane_range<scalar_t, T>(a, rows, cols, fs, ft, grad, begin, end, scratch);
        return;
      }
      for (int64_t task = begin; task < end; ++task) {
        const int64_t p0 = task * lanes, planes = std::min(lanes, a.n * a.c - p0);
        const scalar_t* fs_task = fs + p0 * hw;
        const scalar_t* ft_task = ft + p0 * hw;
        scalar_t* grad_task = grad ? grad + p0 * hw : nullptr;
        a.partials[task] =
            lanes == kHclPlaneBlock
                ? planes_task<kHclPlaneBlock, scalar_t, T>(a, rows, cols, block_of.data(), fs_task,
                                                           ft_task, grad_task, planes, scratch)
                : planes_task<kHclChannelBlock, scalar_t, T>(
                      a, rows, cols, block_of.data(), fs_task, ft_task, grad_task, planes, scratch);
      }
      return;
    }
    const int64_t blocks = (a.c + lanes - 1) / lanes;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, c0 = (task % blocks) * lanes;
      const int64_t offset = n * hw * a.c + c0;
      a.partials[task] = channels_task<scalar_t, T>(a, rows, cols, fs + offset, ft + offset,
                                                    grad ? grad + offset : nullptr,
                                                    std::min(lanes, a.c - c0), scratch);
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
      const T ssq = grad != nullptr ? subtract_scaled(fs + k0, ft + k0, grad + k0, factor, k1 - k0)
                                    : sum_of_squares<scalar_t, T>(fs + k0, ft + k0, k1 - k0);
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
