#pragma once

#include <cmath>

#include "tskd_fast/macros.h"
#include "tskd_fast/scalar_math.h"

// Per-row weights of dynamic temperature distillation (docs/methods.md §1.4); the batch mean and
// tau_n = t0 + beta (mean(w) - w_n) are taken by the caller.
namespace tskd_fast {

constexpr double kFlswNormEps = 1e-4;  // added to each L2 norm, as in the reference
constexpr double kCwsmEps = 1e-3;      // added to the student's max probability

template <typename T>
struct CosineSums {
  T dot;         // sum_k z_k v_k
  T student_sq;  // sum_k z_k^2
  T teacher_sq;  // sum_k v_k^2
};

// Swapping v_j and v_y (j = argmax v, y = label) changes z.v by (z_j - z_y)(v_y - v_j).
template <typename T>
TSKD_HD T swapped_dot_correction(T z_argmax, T z_label, T v_argmax, T v_label) {
  return (z_argmax - z_label) * (v_label - v_argmax);
}

// w = (1 - cos)^gamma; 1 - cos is clamped to [0, 2] so rounding cannot make pow return NaN.
template <typename T>
TSKD_HD T flsw_weight(const CosineSums<T>& s, T gamma) {
  const T eps = T(kFlswNormEps);
  const T cosine = s.dot / ((math_sqrt(s.student_sq) + eps) * (math_sqrt(s.teacher_sq) + eps));
  T gap = T(1) - cosine;
  gap = gap < T(0) ? T(0) : (gap > T(2) ? T(2) : gap);
  return math_pow(gap, gamma);
}

// w = 1 / (max_k softmax(z)_k + eps), with max softmax = 1 / sum_k exp(z_k - max z).
template <typename T>
TSKD_HD T cwsm_weight(T sum_exp) {
  return T(1) / (T(1) / sum_exp + T(kCwsmEps));
}

}  // namespace tskd_fast
