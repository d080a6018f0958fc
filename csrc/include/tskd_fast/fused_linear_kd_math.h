#pragma once

#include <cmath>
#include <cstdint>

#include "tskd_fast/kd_loss_math.h"
#include "tskd_fast/macros.h"
#include "tskd_fast/scalar_math.h"

// Row math of the fused linear + KD loss (docs/methods.md §5; gradients, top-k temperature:
// docs/methods.md §5.5), shared verbatim by the CPU kernel (csrc/cpu/fused_linear_kd_kernel.h)
// and the CUDA kernel.
//
// Notation (the names of the docs; note that kd_loss_math.h calls the student p, here p is the
// teacher). Per row: student logits s_k and teacher logits t_k over the real vocabulary
// k < V, temperature tau, label y (or ignore_index).
//   p = softmax(t / tau) after knowledge adjustment (the target), q = softmax(s / tau).
//   loss = S * D(p, q) + ce_weight * CE(s, y),   S = tau^2 (scale_tau2) or 1,
//   D: kForwardKl KL(p||q), kReverseKl KL(q||p), kJsd beta KL(p||m) + (1-beta) KL(q||m) with
//      m = beta p + (1-beta) q, kSkewForwardKl KL(p || beta p + (1-beta) q), kSkewReverseKl
//      KL(q || beta q + (1-beta) p), kTvd 1/2 sum |p - q|;  0 log 0 = 0.
// Gradient. With G_k = dD/dq_k (up to a constant, which cancels), u_k = q_k G_k and
// Gbar = sum_k u_k, the softmax's Jacobian gives
//   dloss/ds_k = S / tau * (u_k - q_k Gbar) + ce_weight * (softmax(s)_k - [k == y]).
// u_k is finite wherever the loss is (forward KL: u = -p, Gbar = -1, i.e. q - p).
//
// Top-k teacher. The teacher gives ids i_1..i_K and their log-probabilities lp at temperature 1.
// Its remaining mass 1 - sum exp(lp) is spread evenly over the V - K ids not listed (the
// maximum-entropy completion); at temperature tau that full distribution is raised to 1/tau and
// renormalised, p(tau) ~ p^(1/tau). Divergences are taken over K + 1 buckets: the listed ids and
// the tail (everything else), for both distributions; the student's normaliser is over all V
// columns. At tau = 1 the buckets hold exactly the teacher's top-k probabilities and its tail
// mass. Every column of the tail bucket shares one G, so the gradient is S/tau * (G_tail - Gbar)
// q_k on the tail and S/tau * (u_i - Q_i Gbar) on the listed ids.
//
// THE ROW KERNEL'S CONTRACT (op tskd_fast::fused_linear_kd_rows, csrc/ops.cpp):
//   inputs   student (R, V) logits (float32, bfloat16, float16; float64 on the CPU), rows with
//            unit column stride; teacher (R, V) of the same dtype, or top-k ids (R, K) int64 and
//            logprobs (R, K) of the opmath type; target (R,) int64 or none; temperature (R,)
//            opmath, > 0; divergence, beta, ka, lsr_p, scale_tau2, ce_weight, ignore_index,
//            compute_grad, grad_scale.
//   outputs  row_loss (R,) opmath: loss of each row, 0 for ignored rows (label == ignore_index);
//            when compute_grad, student[n, k] is overwritten by grad_scale * dloss_n/ds_{n,k}
//            (0 on ignored rows). With a top-k teacher the student row is used as scratch even
//            without compute_grad. The teacher is only read.
//   passes   over each row, in order (math in float32, float64 for float64 logits):
//     A  (every row) one read of s and t: the online statistics FlkdStats (running maxima with
//        rescaled sums, flkd_stats_push / flkd_stats_merge), walked in chunks of any size in
//        column order. Then flkd_row_setup (or flkd_topk_setup). Forward and reverse KL on
//        teacher and probability-shifted rows get their loss here (flkd_online_divergence).
//     B  (flkd_needs_sums_pass: JSD, the skews, TVD, and label-smoothed rows) one read of s and
//        t: sum_k of flkd_term (the divergence and Gbar), then flkd_finish_sums.
//     C  (compute_grad) one read of s and t, one write: flkd_grad(...) per column. A probability
//        shift swaps the teacher's values at its argmax and at the label (flkd_row_teacher_at
//        says which value a column sees); the label column carries -ce_weight.
//   A row whose student or teacher maximum is not finite (NaN, +inf, or a row of -inf) gets a
//   NaN loss and a NaN gradient; a single -inf logit is a class of zero probability.
namespace tskd_fast {

enum FlkdDivergence : int64_t {
  kForwardKl = 0,
  kReverseKl = 1,
  kJsd = 2,
  kSkewForwardKl = 3,
  kSkewReverseKl = 4,
  kTvd = 5,
};

// ---- the per-column math, for scalars or vectors ----------------------------------------------
// Ops is a small policy of the value type V: ScalarOps below on the GPU and for the CPU's single
// columns; the CPU kernel passes one for at::vec::Vectorized so that the same formulas run on
// whole vectors.
template <typename T>
struct ScalarOps {
  using V = T;
  using Mask = bool;
  static TSKD_HD V splat(T x) { return x; }
  static TSKD_HD V exp(V x) { return math_exp(x); }  // x <= 0 or -inf in every call
  static TSKD_HD V log(V x) { return math_log(x); }
  static TSKD_HD V abs(V x) { return x < T(0) ? -x : x; }
  static TSKD_HD Mask gt(V a, V b) { return a > b; }
  static TSKD_HD V select(Mask m, V a, V b) { return m ? a : b; }
};

// The mixture m = mp p + mq q of the divergences that use one (JSD: m = beta p + (1-beta) q;
// skew forward: the same m; skew reverse: m = (1-beta) p + beta q).
template <typename T>
struct FlkdMix {
  T mp;
  T mq;
};

template <typename T>
TSKD_HD FlkdMix<T> flkd_mix(int64_t divergence, T beta) {
  if (divergence == kSkewReverseKl) return {T(1) - beta, beta};
  return {beta, T(1) - beta};
}

template <typename V>
struct FlkdTerm {
  V loss;  // the column's (or bucket's) share of D
  V u;     // q dD/dq
};

// One column (or bucket): target probability p and its log, student probability q and its log.
// p == 0 or q == 0 (also from underflow) contributes 0 where the definition's 0 log 0 = 0 says
// so; a target mass the other side lacks gives inf, as the definition does.
template <class Ops, typename V = typename Ops::V, typename T>
TSKD_HD FlkdTerm<V> flkd_term(int64_t divergence, const FlkdMix<T>& mix, V p, V log_p, V q,
                              V log_q) {
  const V zero = Ops::splat(T(0));
  FlkdTerm<V> r;
  if (divergence == kForwardKl) {
    r.loss = Ops::select(Ops::gt(p, zero), p * (log_p - log_q), zero);
    r.u = zero - p;
  } else if (divergence == kReverseKl) {
    r.loss = Ops::select(Ops::gt(q, zero), q * (log_q - log_p), zero);
    r.u = r.loss;
  } else if (divergence == kTvd) {
    const V half = Ops::splat(T(0.5));
    r.loss = half * Ops::abs(p - q);
    r.u = Ops::select(Ops::gt(q, p), half * q, Ops::select(Ops::gt(p, q), zero - half * q, zero));
  } else {
    // p > 0 (q > 0) implies m > 0 wherever it is used below: mp, mq > 0 for JSD; for the skews
    // the side whose weight may be 0 is guarded through m itself.
    const V m = Ops::splat(mix.mp) * p + Ops::splat(mix.mq) * q;
    const auto has_m = Ops::gt(m, zero);
    const V log_m = Ops::log(Ops::select(has_m, m, Ops::splat(T(1))));
    const V p_part = Ops::select(Ops::gt(p, zero), p * (log_p - log_m), zero);
    const V q_part = Ops::select(Ops::gt(q, zero), q * (log_q - log_m), zero);
    const V q_over_m = Ops::select(has_m, q / Ops::select(has_m, m, Ops::splat(T(1))), zero);
    if (divergence == kJsd) {
      r.loss = Ops::splat(mix.mp) * p_part + Ops::splat(mix.mq) * q_part;
      r.u = Ops::splat(mix.mq) * q_part;
    } else if (divergence == kSkewForwardKl) {  // KL(p || m)
      r.loss = p_part;
      r.u = zero - Ops::splat(mix.mq) * p * q_over_m;
    } else {  // kSkewReverseKl: KL(q || m)
      r.loss = q_part;
      r.u = q_part - Ops::splat(mix.mq) * q * q_over_m;
    }
  }
  return r;
}

// ---- pass A: online statistics ------------------------------------------------------------------
template <typename T>
struct FlkdStats {
  T s_max;   // max_k s_k (-inf for no columns)
  T s_sum;   // sum_k exp((s_k - s_max) / tau)
  T ce_sum;  // sum_k exp(s_k - s_max): the CE normaliser (gathered when the CE term needs its own)
  T t_max;   // max_k t_k
  T t_sum;   // sum_k exp((t_k - t_max) / tau)
  // Forward KL: sum_k exp((t_k - t_max) / tau) (t_k - s_k); reverse KL: sum_k exp((s_k - s_max)
  // / tau) (s_k - t_k); 0 where the exponential is 0. Unused (0) for the other divergences.
  T cross;
  int64_t t_argmax;  // first column holding t_max (-1 for no columns)
};

template <typename T>
TSKD_HD FlkdStats<T> flkd_stats_empty() {
  const T ninf = -T(INFINITY);
  return FlkdStats<T>{ninf, T(0), T(0), ninf, T(0), T(0), -1};
}

// exp((old_max - new_max) * inv_tau): the factor that moves a sum taken relative to old_max to
// new_max; 0 for a part without columns (old_max == -inf).
template <typename T>
TSKD_HD T flkd_rescale(T old_max, T new_max, T inv_tau) {
  return old_max == -T(INFINITY) ? T(0) : math_exp((old_max - new_max) * inv_tau);
}

template <typename T>
TSKD_HD bool flkd_finite(T x) {
  return x == x && x != T(INFINITY) && x != -T(INFINITY);
}

template <typename T>
TSKD_HD T flkd_nan_max(T a, T b) {
  return (a != a || b != b) ? T(NAN) : (a > b ? a : b);
}

// Merge the statistics of two parts of a row; `a` covers columns before `b` (argmax ties go to
// the earlier column, as torch.argmax).
template <typename T>
TSKD_HD FlkdStats<T> flkd_stats_merge(const FlkdStats<T>& a, const FlkdStats<T>& b,
                                      int64_t divergence, T inv_tau) {
  FlkdStats<T> r;
  r.s_max = flkd_nan_max(a.s_max, b.s_max);
  r.t_max = flkd_nan_max(a.t_max, b.t_max);
  const T sa = flkd_rescale(a.s_max, r.s_max, inv_tau),
          sb = flkd_rescale(b.s_max, r.s_max, inv_tau);
  const T ta = flkd_rescale(a.t_max, r.t_max, inv_tau),
          tb = flkd_rescale(b.t_max, r.t_max, inv_tau);
  r.s_sum = sa * a.s_sum + sb * b.s_sum;
  r.t_sum = ta * a.t_sum + tb * b.t_sum;
  r.ce_sum = flkd_rescale(a.s_max, r.s_max, T(1)) * a.ce_sum +
             flkd_rescale(b.s_max, r.s_max, T(1)) * b.ce_sum;
  // A carried sum whose weights all underflowed is 0, not 0 * inf.
  const T fa = divergence == kReverseKl ? sa : ta, fb = divergence == kReverseKl ? sb : tb;
  r.cross = (fa == T(0) ? T(0) : fa * a.cross) + (fb == T(0) ? T(0) : fb * b.cross);
  r.t_argmax = (b.t_max > a.t_max || a.t_argmax < 0) ? b.t_argmax : a.t_argmax;
  return r;
}

// The statistics of the single column k (what a thread folds in with flkd_stats_merge).
template <typename T>
TSKD_HD FlkdStats<T> flkd_stats_of(T s, T t, int64_t k, int64_t divergence) {
  const T ninf = -T(INFINITY);
  FlkdStats<T> r;
  r.s_max = s;
  r.t_max = t;
  r.s_sum = r.ce_sum = s == ninf ? T(0) : T(1);
  r.t_sum = t == ninf ? T(0) : T(1);
  if (divergence == kForwardKl) {
    r.cross = r.t_sum == T(0) ? T(0) : t - s;
  } else if (divergence == kReverseKl) {
    r.cross = r.s_sum == T(0) ? T(0) : s - t;
  } else {
    r.cross = T(0);
  }
  r.t_argmax = k;
  return r;
}

template <typename T>
TSKD_HD void flkd_stats_push(FlkdStats<T>& stats, T s, T t, int64_t k, int64_t divergence,
                             T inv_tau) {
  stats = flkd_stats_merge(stats, flkd_stats_of(s, t, k, divergence), divergence, inv_tau);
}

// ---- after pass A: the row's constants ----------------------------------------------------------
template <typename T>
struct FlkdOptions {
  int64_t divergence;
  FlkdMix<T> mix;
  int64_t ka;
  SmoothedTarget<T> smoothed;  // smoothed_target(lsr_p, V) (label-smoothed rows)
  T log_on;                    // log smoothed.on
  T log_off;                   // log smoothed.off (-inf when lsr_p == 1)
  bool scale_tau2;
  T ce_weight;
  int64_t ignore_index;
  T grad_scale;
  int64_t classes;  // V
};

template <typename T>
TSKD_HD FlkdOptions<T> flkd_options(int64_t divergence, T beta, int64_t ka, T lsr_p,
                                    bool scale_tau2, T ce_weight, int64_t ignore_index,
                                    T grad_scale, int64_t classes) {
  FlkdOptions<T> o;
  o.divergence = divergence;
  o.mix = flkd_mix(divergence, beta);
  o.ka = ka;
  o.smoothed = smoothed_target<T>(lsr_p, classes);
  o.log_on = math_log(o.smoothed.on);
  o.log_off = o.smoothed.off > T(0) ? math_log(o.smoothed.off) : -T(INFINITY);
  o.scale_tau2 = scale_tau2;
  o.ce_weight = ce_weight;
  o.ignore_index = ignore_index;
  o.grad_scale = grad_scale;
  o.classes = classes;
  return o;
}

// Everything passes B and C need about one row.
template <typename T>
struct FlkdRow {
  bool ignored;    // label == ignore_index: loss 0, gradient 0
  bool finite;     // both maxima finite; otherwise loss and gradient are NaN
  int target;      // RowTarget (kd_loss_math.h): teacher, swapped (probability shift), smoothed
  bool ce_active;  // ce_weight != 0 and a label
  int64_t label;   // -1 without a label
  int64_t argmax;  // the teacher's argmax on swapped rows, else -1
  T inv_tau;
  T scale;  // S: tau^2 or 1
  T s_max;  // log q_k = (s_k - s_max) inv_tau - s_logz
  T s_logz;
  T t_max;  // log p_k = (t_k - t_max) inv_tau - t_logz   (teacher and swapped rows)
  T t_logz;
  T ce_logz;      // log softmax(s)_k = s_k - s_max - ce_logz
  T t_at_label;   // t_y, the value the argmax column sees on swapped rows
  T s_at_label;   // s_y (rows with a label)
  T s_at_argmax;  // s_j, j the teacher's argmax (swapped rows)
};

// Whether the row needs pass B: the loss of JSD, the skews and TVD needs the normalised p and q
// of every column; forward and reverse KL get theirs from pass A except on label-smoothed rows.
template <typename T>
TSKD_HD bool flkd_needs_sums_pass(const FlkdRow<T>& r, int64_t divergence) {
  if (r.ignored || !r.finite) return false;
  if (divergence == kForwardKl || divergence == kReverseKl) return r.target == kTargetSmoothed;
  return true;
}

// `label`: the row's label or ignore_index (no target: pass ignore_index with has_target false).
// s_at_label, t_at_label, s_at_argmax are read by the caller once stats.t_argmax is known (only
// the ones the row needs: the label's when it is used, the argmax's on swapped rows).
template <typename T>
TSKD_HD FlkdRow<T> flkd_row_setup(const FlkdStats<T>& st, const FlkdOptions<T>& o, T tau,
                                  bool has_target, int64_t label) {
  FlkdRow<T> r{};
  r.ignored = has_target && label == o.ignore_index;
  r.finite = flkd_finite(st.s_max) && flkd_finite(st.t_max);
  const bool label_used = has_target && !r.ignored;
  r.label = label_used ? label : -1;
  r.target = label_used ? kd_row_target(o.ka, label, o.ignore_index, st.t_argmax)
                        : static_cast<int>(kTargetTeacher);
  r.argmax = r.target == kTargetSwapped ? st.t_argmax : -1;
  r.ce_active = label_used && o.ce_weight != T(0);
  r.inv_tau = T(1) / tau;
  r.scale = o.scale_tau2 ? tau * tau : T(1);
  r.s_max = st.s_max;
  r.s_logz = math_log(st.s_sum);
  r.t_max = st.t_max;
  r.t_logz = math_log(st.t_sum);
  r.ce_logz = tau == T(1) ? r.s_logz : math_log(st.ce_sum);
  return r;
}

// Whether the CE normaliser needs exponentials of its own in pass A (the caller gathers ce_sum
// only then; at tau == 1 it is s_sum).
template <typename T>
TSKD_HD bool flkd_ce_own_exp(T ce_weight, bool has_target, T tau) {
  return has_target && ce_weight != T(0) && tau != T(1);
}

// The teacher's value at column k as the row's target sees it: the probability shift swaps the
// values at the argmax (the maximum, t_max) and at the label.
template <typename T>
TSKD_HD T flkd_row_teacher_at(const FlkdRow<T>& r, int64_t k, T t_k) {
  if (r.target != kTargetSwapped) return t_k;
  if (k == r.label) return r.t_max;
  if (k == r.argmax) return r.t_at_label;
  return t_k;
}

// log p_k of teacher and swapped rows from the teacher's value (after flkd_row_teacher_at).
template <typename T>
TSKD_HD T flkd_log_p(const FlkdRow<T>& r, T t) {
  return (t - r.t_max) * r.inv_tau - r.t_logz;
}

template <typename T>
TSKD_HD T flkd_log_q(const FlkdRow<T>& r, T s) {
  return (s - r.s_max) * r.inv_tau - r.s_logz;
}

// log p_k of label-smoothed rows.
template <typename T>
TSKD_HD T flkd_log_p_smoothed(const FlkdRow<T>& r, const FlkdOptions<T>& o, int64_t k) {
  return k == r.label ? o.log_on : o.log_off;
}

// CE(s, y) = log sum exp(s - s_max) - (s_y - s_max).
template <typename T>
TSKD_HD T flkd_ce_loss(const FlkdRow<T>& r) {
  return r.ce_logz - (r.s_at_label - r.s_max);
}

// D of forward / reverse KL on teacher and swapped rows from pass A alone.
//   KL(p||q) = cross / (tau t_sum) + (s_max - t_max) / tau - t_logz + s_logz, and symmetrically.
// The swap changes two columns of the cross sum: for forward KL by (1 - exp(a_y))(s_j - s_y),
// for reverse KL by (exp(b_j) - exp(b_y))(t_j - t_y), j the argmax, a, b the scaled logits.
template <typename T>
TSKD_HD T flkd_online_divergence(const FlkdStats<T>& st, const FlkdRow<T>& r, int64_t divergence) {
  T cross = st.cross;
  if (divergence == kForwardKl) {
    if (r.target == kTargetSwapped) {
      const T ea_y = math_exp((r.t_at_label - r.t_max) * r.inv_tau);
      cross += (T(1) - ea_y) * (r.s_at_argmax - r.s_at_label);
    }
    return cross * r.inv_tau / st.t_sum + (r.s_max - r.t_max) * r.inv_tau - r.t_logz + r.s_logz;
  }
  if (r.target == kTargetSwapped) {
    const T eb_j = math_exp((r.s_at_argmax - r.s_max) * r.inv_tau);
    const T eb_y = math_exp((r.s_at_label - r.s_max) * r.inv_tau);
    cross += (eb_j - eb_y) * (r.t_max - r.t_at_label);
  }
  return cross * r.inv_tau / st.s_sum + (r.t_max - r.s_max) * r.inv_tau - r.s_logz + r.t_logz;
}

// ---- pass B and the row's result ---------------------------------------------------------------
template <typename T>
struct FlkdSums {
  T loss;  // sum_k flkd_term(...).loss
  T u;     // sum_k flkd_term(...).u
};

// What the row's loss and gradient need in the end: D and Gbar.
template <typename T>
struct FlkdResult {
  T divergence;  // D
  T g_bar;       // Gbar = sum_k u_k
};

// Gbar where it needs no sum: -1 for forward KL (sum p), D for reverse KL.
template <typename T>
TSKD_HD FlkdResult<T> flkd_result_online(T divergence_value, int64_t divergence) {
  return {divergence_value, divergence == kForwardKl ? T(-1) : divergence_value};
}

template <typename T>
TSKD_HD FlkdResult<T> flkd_result_of_sums(const FlkdSums<T>& s, int64_t divergence) {
  return {s.loss, divergence == kForwardKl ? T(-1) : s.u};
}

// The row's loss: S D + ce_weight CE; 0 for ignored rows, NaN for rows that are not finite.
template <typename T>
TSKD_HD T flkd_row_loss(const FlkdRow<T>& r, const FlkdResult<T>& res, const FlkdOptions<T>& o) {
  if (r.ignored) return T(0);
  if (!r.finite) return T(NAN);
  const T loss = r.scale * res.divergence;
  return r.ce_active ? loss + o.ce_weight * flkd_ce_loss(r) : loss;
}

// ---- pass C: the gradient
// ------------------------------------------------------------------------
template <typename T>
struct FlkdGradCoefs {
  T kd;      // grad_scale S / tau (0 on ignored rows)
  T g_bar;   // Gbar
  T ce;      // grad_scale ce_weight (0 when CE is off or the row is ignored)
  bool nan;  // the row is not finite: every gradient element is NaN
};

template <typename T>
TSKD_HD FlkdGradCoefs<T> flkd_grad_coefs(const FlkdRow<T>& r, const FlkdResult<T>& res,
                                         const FlkdOptions<T>& o) {
  FlkdGradCoefs<T> c;
  c.nan = !r.ignored && !r.finite;
  c.kd = r.ignored ? T(0) : o.grad_scale * r.scale * r.inv_tau;
  c.g_bar = res.g_bar;
  c.ce = r.ce_active ? o.grad_scale * o.ce_weight : T(0);
  return c;
}

// One column's gradient from its term (flkd_term of p, q at the column), q, and the CE softmax
// softmax(s)_k = exp(s_k - s_max - ce_logz) (q itself at tau == 1); the label column subtracts
// c.ce afterwards (flkd_grad_label).
template <class Ops, typename V = typename Ops::V, typename T>
TSKD_HD V flkd_grad(const FlkdGradCoefs<T>& c, const FlkdTerm<V>& term, V q, V ce_softmax) {
  return Ops::splat(c.kd) * (term.u - q * Ops::splat(c.g_bar)) + Ops::splat(c.ce) * ce_softmax;
}

template <typename T>
TSKD_HD T flkd_grad_label(const FlkdGradCoefs<T>& c, T grad) {
  return grad - c.ce;
}

// The gradient of one column of a teacher or swapped row from its logits, in scalars: what
// kernels use for single columns (the label, the argmax) and what the vector loops compute.
template <typename T>
TSKD_HD T flkd_grad_column(const FlkdRow<T>& r, const FlkdOptions<T>& o, const FlkdGradCoefs<T>& c,
                           int64_t k, T s, T t) {
  if (c.nan) return T(NAN);
  const T log_q = flkd_log_q(r, s);
  const T q = math_exp(log_q);
  T log_p;
  if (r.target == kTargetSmoothed) {
    log_p = flkd_log_p_smoothed(r, o, k);
  } else {
    log_p = flkd_log_p(r, flkd_row_teacher_at(r, k, t));
  }
  const T p = math_exp(log_p);
  const FlkdTerm<T> term = flkd_term<ScalarOps<T>>(o.divergence, o.mix, p, log_p, q, log_q);
  const T ce_softmax = c.ce == T(0) ? T(0) : math_exp(s - r.s_max - r.ce_logz);
  const T g = flkd_grad<ScalarOps<T>>(c, term, q, ce_softmax);
  return k == r.label ? flkd_grad_label(c, g) : g;
}

// The term of one column of pass B, in scalars (for single columns).
template <typename T>
TSKD_HD FlkdTerm<T> flkd_term_column(const FlkdRow<T>& r, const FlkdOptions<T>& o, int64_t k, T s,
                                     T t) {
  const T log_q = flkd_log_q(r, s);
  T log_p;
  if (r.target == kTargetSmoothed) {
    log_p = flkd_log_p_smoothed(r, o, k);
  } else {
    log_p = flkd_log_p(r, flkd_row_teacher_at(r, k, t));
  }
  return flkd_term<ScalarOps<T>>(o.divergence, o.mix, math_exp(log_p), log_p, math_exp(log_q),
                                 log_q);
}

// ---- top-k teacher
// --------------------------------------------------------------------------------- Pass A of a
// top-k row runs over the student with the listed ids left out (the CPU kernel masks them with -inf
// in the row it owns), which gives the tail's own statistics without a subtraction; the ids'
// student logits are kept aside. Then, with the K listed values:
//   teacher bucket logs at tau: l_i = lp_i / tau, l_tail = log(V - K) + (log P_tail - log(V - K))
//   / tau with P_tail = max(0, 1 - sum exp(lp)); log P = l - logsumexp(l).
//   student: s_max and s_sum over all V columns; Q_i from the listed logits, Q_tail from the tail
//   sum.
template <typename T>
struct FlkdTopkRow {
  T t_logz;      // logsumexp over the K + 1 bucket logs l
  T log_p_tail;  // log P_tail at tau (-inf when the tail is empty)
  T log_q_tail;  // log Q_tail
  T g_tail;      // G of the tail bucket, u_tail / Q_tail (0 when Q_tail == 0)
};

// Folds the listed student logits into the tail statistics `st` (gathered over the other V - K
// columns) and fills the student side of `r` (s_max, s_logz, ce_logz). Returns the tail's
// student sum relative to the final s_max.
template <typename T>
TSKD_HD T flkd_topk_student(FlkdStats<T>& st, const T* s_ids, int64_t k, T inv_tau,
                            bool ce_own_exp) {
  T s_max = st.s_max;
  for (int64_t i = 0; i < k; ++i) s_max = flkd_nan_max(s_max, s_ids[i]);
  const T tail = flkd_rescale(st.s_max, s_max, inv_tau) * st.s_sum;
  T sum = tail;
  T ce_sum = ce_own_exp ? flkd_rescale(st.s_max, s_max, T(1)) * st.ce_sum : T(0);
  for (int64_t i = 0; i < k; ++i) {
    sum += math_exp((s_ids[i] - s_max) * inv_tau);
    if (ce_own_exp) ce_sum += math_exp(s_ids[i] - s_max);
  }
  st.s_max = s_max;
  st.s_sum = sum;
  st.ce_sum = ce_sum;
  return tail;
}

// The teacher's tail log-mass at temperature 1, log(1 - sum exp(lp)) (-inf when the listed
// probabilities sum to 1 or more).
template <typename T>
TSKD_HD T flkd_topk_log_tail(const T* logprobs, int64_t k) {
  T listed = T(0);
  for (int64_t i = 0; i < k; ++i) listed += math_exp(logprobs[i]);
  return listed < T(1) ? math_log(T(1) - listed) : -T(INFINITY);
}

// The teacher's bucket log-normaliser at tau and log P_tail; `log_tail1` from
// flkd_topk_log_tail, V the real vocabulary.
template <typename T>
TSKD_HD void flkd_topk_teacher(FlkdTopkRow<T>& tk, const T* logprobs, int64_t k, T log_tail1,
                               int64_t classes, T inv_tau) {
  const T ninf = -T(INFINITY);
  const int64_t rest = classes - k;
  T l_tail = ninf;
  if (rest > 0 && log_tail1 != ninf) {
    const T log_rest = math_log(T(rest));
    l_tail = log_rest + (log_tail1 - log_rest) * inv_tau;
  }
  T mx = l_tail;
  for (int64_t i = 0; i < k; ++i) mx = flkd_nan_max(mx, logprobs[i] * inv_tau);
  T sum = l_tail == ninf ? T(0) : math_exp(l_tail - mx);
  for (int64_t i = 0; i < k; ++i) sum += math_exp(logprobs[i] * inv_tau - mx);
  tk.t_logz = mx + math_log(sum);
  tk.log_p_tail = l_tail == ninf ? ninf : l_tail - tk.t_logz;
}

// log P_i of listed id i at tau.
template <typename T>
TSKD_HD T flkd_topk_log_p(const FlkdTopkRow<T>& tk, T logprob, T inv_tau) {
  return logprob * inv_tau - tk.t_logz;
}

// The tail bucket's term; sets tk.log_q_tail and tk.g_tail. `tail_sum`: the tail's student sum
// relative to s_max (flkd_topk_student).
template <typename T>
TSKD_HD FlkdTerm<T> flkd_topk_tail_term(FlkdTopkRow<T>& tk, const FlkdRow<T>& r,
                                        const FlkdOptions<T>& o, T tail_sum) {
  tk.log_q_tail = tail_sum > T(0) ? math_log(tail_sum) - r.s_logz : -T(INFINITY);
  const T q_tail = tail_sum > T(0) ? math_exp(tk.log_q_tail) : T(0);
  const T p_tail = math_exp(tk.log_p_tail);
  const FlkdTerm<T> term =
      flkd_term<ScalarOps<T>>(o.divergence, o.mix, p_tail, tk.log_p_tail, q_tail, tk.log_q_tail);
  tk.g_tail = q_tail > T(0) ? term.u / q_tail : T(0);
  return term;
}

// The gradient coefficient of every tail column: grad = tail_coef * q_k + c.ce softmax(s)_k.
template <typename T>
TSKD_HD T flkd_topk_tail_coef(const FlkdTopkRow<T>& tk, const FlkdGradCoefs<T>& c) {
  return c.kd * (tk.g_tail - c.g_bar);
}

// The row of a top-k teacher: the student side from `st` (after flkd_topk_student), the teacher's
// buckets into `tk`. Knowledge adjustment does not apply (the teacher's full distribution is
// unknown); a NaN or +inf log-probability makes the row NaN.
template <typename T>
TSKD_HD FlkdRow<T> flkd_topk_setup(FlkdTopkRow<T>& tk, const FlkdStats<T>& st,
                                   const FlkdOptions<T>& o, const T* logprobs, int64_t k, T tau,
                                   bool has_target, int64_t label) {
  FlkdStats<T> student = st;
  student.t_max = T(0);  // no teacher logits: finite placeholders
  student.t_sum = T(1);
  FlkdRow<T> r = flkd_row_setup(student, o, tau, has_target, label);
  r.target = kTargetTeacher;
  r.argmax = -1;
  flkd_topk_teacher(tk, logprobs, k, flkd_topk_log_tail(logprobs, k), o.classes, r.inv_tau);
  r.finite = r.finite && flkd_finite(tk.t_logz);
  return r;
}

// The term of listed id i (teacher log-probability lp, student logit s at the id).
template <typename T>
TSKD_HD FlkdTerm<T> flkd_topk_listed_term(const FlkdTopkRow<T>& tk, const FlkdRow<T>& r,
                                          const FlkdOptions<T>& o, T logprob, T s) {
  const T log_p = flkd_topk_log_p(tk, logprob, r.inv_tau);
  const T log_q = flkd_log_q(r, s);
  return flkd_term<ScalarOps<T>>(o.divergence, o.mix, math_exp(log_p), log_p, math_exp(log_q),
                                 log_q);
}

// The gradient at listed id `id` (without the label's -ce_weight, which the caller subtracts
// from the label column last, wherever the label is).
template <typename T>
TSKD_HD T flkd_topk_listed_grad(const FlkdTopkRow<T>& tk, const FlkdRow<T>& r,
                                const FlkdOptions<T>& o, const FlkdGradCoefs<T>& c, T logprob,
                                T s) {
  if (c.nan) return T(NAN);
  const FlkdTerm<T> term = flkd_topk_listed_term(tk, r, o, logprob, s);
  const T q = math_exp(flkd_log_q(r, s));
  const T ce_softmax = c.ce == T(0) ? T(0) : math_exp(s - r.s_max - r.ce_logz);
  return flkd_grad<ScalarOps<T>>(c, term, q, ce_softmax);
}

}  // namespace tskd_fast
