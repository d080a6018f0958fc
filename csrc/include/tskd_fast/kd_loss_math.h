#pragma once

#include <cmath>
#include <cstdint>

#include "tskd_fast/macros.h"
#include "tskd_fast/scalar_math.h"

// Row math of the fused KD loss (docs/methods.md §1). Per row n, with student logits z, teacher
// logits v, temperature tau and label y:
//   b_k = (z_k - max z) / tau,  a_k = (v_k - max v) / tau
//   p = softmax(b), q = softmax(a) (after knowledge adjustment), e1_k = exp(z_k - max z)
//   loss = s * KL(q || p) + ce_weight * CE(z, y),  s = tau^2 or 1
//   dloss/dz_k = s/tau * (p_k - q_k) + ce_weight * (e1_k / sum(e1) - [k == y])
// Each backend gathers the sums below in one pass over the row; the functions here turn them into
// the loss and the gradient coefficients.

namespace tskd_fast {

// Knowledge adjustment of rows whose teacher argmax differs from the label.
enum KaMode : int64_t { kKaNone = 0, kKaProbShift = 1, kKaLabelSmooth = 2 };

// What one row's target distribution q is.
enum RowTarget : int { kTargetTeacher = 0, kTargetSwapped = 1, kTargetSmoothed = 2 };

TSKD_HD int kd_row_target(int64_t ka, int64_t label, int64_t ignore_index, int64_t teacher_argmax) {
  if (ka == kKaNone || label == ignore_index || label == teacher_argmax) return kTargetTeacher;
  return ka == kKaProbShift ? kTargetSwapped : kTargetSmoothed;
}

template <typename T>
TSKD_HD T xlogx(T x) {
  return x > T(0) ? x * math_log(x) : T(0);
}

// The label-smoothing target: `on` at the label, `off` elsewhere, and sum_k q_k log q_k.
template <typename T>
struct SmoothedTarget {
  T on;
  T off;
  T neg_entropy;
};

template <typename T>
TSKD_HD SmoothedTarget<T> smoothed_target(T p_correct, int64_t num_classes) {
  SmoothedTarget<T> t;
  t.on = p_correct;
  t.off = num_classes > 1 ? (T(1) - p_correct) / T(num_classes - 1) : T(0);
  t.neg_entropy = xlogx(t.on) + T(num_classes - 1) * xlogx(t.off);
  return t;
}

// One element's share of sum_k exp(a_k) (a_k - b_k); 0 where exp(a_k) == 0, so that a class the
// teacher gives no mass (a_k = -inf) contributes nothing even if the student also has -inf there.
template <typename T>
TSKD_HD T kl_cross_term(T exp_a, T a, T b) {
  return exp_a == T(0) ? T(0) : exp_a * (a - b);
}

// Sums over one row. Which of them a backend needs depends on the row's target kind.
template <typename T>
struct KdRowSums {
  T student_exp;     // sum_k exp(b_k)
  T teacher_exp;     // sum_k exp(a_k)                 (teacher and swapped rows)
  T cross;           // sum_k kl_cross_term(exp(a_k), a_k, b_k)  (teacher and swapped rows)
  T student_scaled;  // sum_k b_k                      (smoothed rows)
  T ce_exp;          // sum_k exp(z_k - max z)        (when the CE term is active)
};

// Scalars of one row that the loss needs besides the sums.
template <typename T>
struct KdRowInfo {
  int target;              // RowTarget
  bool ce_active;          // ce_weight != 0 and the label is not ignored
  T inv_tau;               // 1 / tau
  T scale;                 // s: tau^2 or 1
  T student_max;           // max z
  T student_at_label;      // z_y (when the label is used)
  T student_at_argmax;     // z_j, j = argmax v (swapped rows)
  T teacher_exp_at_label;  // exp((v_y - max v) / tau) (swapped rows)
};

// Swapping the teacher's values at j = argmax v and at the label y changes `cross` by
// (exp(a_j) - exp(a_y)) (b_j - b_y) with exp(a_j) = 1; teacher_exp is a permutation invariant.
template <typename T>
TSKD_HD T swapped_cross_correction(const KdRowInfo<T>& r) {
  return (T(1) - r.teacher_exp_at_label) * (r.student_at_argmax - r.student_at_label) * r.inv_tau;
}

// Cross-entropy at temperature 1 for the label: log sum exp(z - max z) - (z_y - max z).
template <typename T>
TSKD_HD T ce_row_loss(const KdRowSums<T>& s, const KdRowInfo<T>& r) {
  return math_log(s.ce_exp) - (r.student_at_label - r.student_max);
}

template <typename T>
TSKD_HD T kd_row_loss(const KdRowSums<T>& s, const KdRowInfo<T>& r, const SmoothedTarget<T>& st,
                      T ce_weight) {
  // Rows reach here with finite maxima, so a non-finite student logit below is -inf.
  const T inf = T(INFINITY);
  const T log_student = math_log(s.student_exp);
  T kl;
  if (r.target == kTargetSmoothed) {
    const T b_label = (r.student_at_label - r.student_max) * r.inv_tau;
    // off == 0 (lsr_p = 1) must not turn a -inf student logit into 0 * -inf.
    const T off_part = st.off == T(0) ? T(0) : st.off * (s.student_scaled - b_label);
    const T q_dot_log_p = off_part + st.on * b_label - log_student;
    // The target puts on > 0 on the label: a student -inf there is an infinite KL (and the sums
    // above would give -inf - -inf).
    kl = b_label == -inf ? inf : st.neg_entropy - q_dot_log_p;
  } else if (r.target == kTargetSwapped &&
             (r.student_at_label == -inf || r.student_at_argmax == -inf)) {
    // The swapped target holds 1/sum exp(a) > 0 at the label and exp(a_label)/sum exp(a) at the
    // argmax: a student -inf where it is positive makes the KL infinite. The remaining case (a
    // student -inf at the argmax, where the swapped target underflowed to 0) cannot be told from
    // the row sums, which hold +inf from the unswapped term: NaN rather than a wrong number.
    const bool infinite = r.student_at_label == -inf || r.teacher_exp_at_label > T(0);
    kl = infinite ? inf : T(NAN);
  } else {
    T cross = s.cross;
    if (r.target == kTargetSwapped) cross += swapped_cross_correction(r);
    kl = cross / s.teacher_exp - math_log(s.teacher_exp) + log_student;
  }
  const T loss = r.scale * kl;
  return r.ce_active ? loss + ce_weight * ce_row_loss(s, r) : loss;
}

// grad_scale * dloss/dz_k = student * exp(b_k) - teacher * exp(a_k) - smoothed * q_k
//                           + ce * exp(z_k - max z) - ce_label * [k == y]
// grad_scale folds the reduction's factor (1/B for batchmean) into the written gradient, so the
// common backward (an incoming gradient equal to that factor) needs no pass over it.
template <typename T>
struct KdGradCoefs {
  T student;   // s / (tau * sum exp(b))
  T teacher;   // s / (tau * sum exp(a))    (teacher and swapped rows, else 0)
  T smoothed;  // s / tau                    (smoothed rows, times q_k, else 0)
  T ce;        // ce_weight / sum exp(z - max z)  (0 when CE is off)
  T ce_label;  // ce_weight                  (0 when CE is off)
};

template <typename T>
TSKD_HD KdGradCoefs<T> kd_grad_coefs(const KdRowSums<T>& s, const KdRowInfo<T>& r, T ce_weight,
                                     T grad_scale) {
  KdGradCoefs<T> c;
  const T s_over_tau = grad_scale * r.scale * r.inv_tau;
  const T ce = grad_scale * ce_weight;
  c.student = s_over_tau / s.student_exp;
  c.teacher = r.target == kTargetSmoothed ? T(0) : s_over_tau / s.teacher_exp;
  c.smoothed = r.target == kTargetSmoothed ? s_over_tau : T(0);
  c.ce = r.ce_active ? ce / s.ce_exp : T(0);
  c.ce_label = r.ce_active ? ce : T(0);
  return c;
}

// One gradient element. `exp_a` is exp(a_k) of the (possibly swapped) teacher, `q_smoothed` the
// smoothed target at k; the unused one is multiplied by a zero coefficient.
template <typename T>
TSKD_HD T kd_grad_element(const KdGradCoefs<T>& c, T exp_b, T exp_a, T q_smoothed, T exp_z,
                          bool is_label) {
  T g = c.student * exp_b - c.teacher * exp_a - c.smoothed * q_smoothed + c.ce * exp_z;
  return is_label ? g - c.ce_label : g;
}

}  // namespace tskd_fast
