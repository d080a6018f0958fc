#pragma once

// Loads and stores of logit rows as vectors of the compute type (float, or double for double):
// float16/bfloat16 rows are widened on load and narrowed on store. One step covers kWidth elements
// held in kParts compute vectors. Included by the per-ISA kernel files only.
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <limits>

namespace tskd_fast::cpu::CPU_CAPABILITY {

using at::vec::Vectorized;

template <typename scalar_t>
struct Lanes {  // float and double: one vector per step
  using opmath = scalar_t;
  using Vec = Vectorized<scalar_t>;
  static constexpr int kParts = 1;
  static constexpr int kWidth = Vec::size();
  static void load(const scalar_t* p, Vec* out) { out[0] = Vec::loadu(p); }
  static void store(scalar_t* p, const Vec* in) { in[0].store(p); }
  // The first `count` (< kWidth) elements; the other lanes read as 0 and are not written.
  static void load(const scalar_t* p, Vec* out, int count) { out[0] = Vec::loadu(p, count); }
  static void store(scalar_t* p, const Vec* in, int count) { in[0].store(p, count); }
};

template <typename reduced_t>
struct ReducedLanes {  // float16 and bfloat16: one narrow vector, two float vectors per step
  using opmath = float;
  using Vec = Vectorized<float>;
  static constexpr int kParts = 2;
  static constexpr int kWidth = Vectorized<reduced_t>::size();
  static_assert(kWidth == 2 * Vec::size(), "a reduced vector must widen to two float vectors");
  static void load(const reduced_t* p, Vec* out) {
    auto [lo, hi] = at::vec::convert_to_float<reduced_t>(Vectorized<reduced_t>::loadu(p));
    out[0] = lo;
    out[1] = hi;
  }
  static void store(reduced_t* p, const Vec* in) {
    at::vec::convert_from_float<reduced_t>(in[0], in[1]).store(p);
  }
  static void load(const reduced_t* p, Vec* out, int count) {
    auto [lo, hi] = at::vec::convert_to_float<reduced_t>(Vectorized<reduced_t>::loadu(p, count));
    out[0] = lo;
    out[1] = hi;
  }
  static void store(reduced_t* p, const Vec* in, int count) {
    at::vec::convert_from_float<reduced_t>(in[0], in[1]).store(p, count);
  }
};

template <>
struct Lanes<c10::Half> : ReducedLanes<c10::Half> {};
template <>
struct Lanes<c10::BFloat16> : ReducedLanes<c10::BFloat16> {};

template <typename T>
T nan_max(T a, T b) {  // max that propagates NaN, like torch.max
  return (std::isnan(a) || std::isnan(b)) ? std::numeric_limits<T>::quiet_NaN() : (a > b ? a : b);
}

template <typename T>
T reduce_max(const Vectorized<T>& v) {
  return at::vec::vec_reduce_all<T>(
      [](Vectorized<T>& x, Vectorized<T>& y) { return at::vec::maximum(x, y); }, v);
}

template <typename T>
T reduce_sum(const Vectorized<T>& v) {
  return at::vec::vec_reduce_all<T>([](Vectorized<T>& x, Vectorized<T>& y) { return x + y; }, v);
}

// Row maxima (NaN-propagating) of one or two rows of `classes` elements.
template <typename scalar_t>
typename Lanes<scalar_t>::opmath row_max(const scalar_t* x, int64_t classes) {
  using L = Lanes<scalar_t>;
  using T = typename L::opmath;
  using Vec = typename L::Vec;
  const int64_t full = classes - classes % L::kWidth;
  Vec acc(-std::numeric_limits<T>::infinity());
  Vec part[L::kParts];
  for (int64_t k = 0; k < full; k += L::kWidth) {
    L::load(x + k, part);
    for (int i = 0; i < L::kParts; ++i) acc = at::vec::maximum(acc, part[i]);
  }
  T m = reduce_max(acc);
  for (int64_t k = full; k < classes; ++k) m = nan_max(m, static_cast<T>(x[k]));
  return m;
}

// First index holding `value` (the first NaN when value is NaN): torch.argmax's tie rule.
template <typename scalar_t>
int64_t first_index_of(const scalar_t* x, int64_t classes, typename Lanes<scalar_t>::opmath value) {
  using L = Lanes<scalar_t>;
  using T = typename L::opmath;
  using Vec = typename L::Vec;
  const bool find_nan = std::isnan(value);
  const int64_t full = classes - classes % L::kWidth;
  const Vec target(value);
  Vec part[L::kParts];
  for (int64_t k = 0; k < full; k += L::kWidth) {
    L::load(x + k, part);
    for (int i = 0; i < L::kParts; ++i) {
      // zero_mask has a bit set for each lane that is 0.0: lanes that are not hits.
      const Vec hit = find_nan ? part[i].isnan() : (part[i] == target);
      const int misses = hit.zero_mask();
      const int all = (1 << Vec::size()) - 1;
      if (misses != all) return k + i * Vec::size() + __builtin_ctz(~misses & all);
    }
  }
  for (int64_t k = full; k < classes; ++k) {
    const T xk = static_cast<T>(x[k]);
    if (find_nan ? std::isnan(xk) : xk == value) return k;
  }
  return 0;
}

}  // namespace tskd_fast::cpu::CPU_CAPABILITY
