#pragma once

// The fused linear + KD row kernel on the CPU (op tskd_fast::fused_linear_kd_rows): the contract
// and the passes A, B, C of tskd_fast/fused_linear_kd_math.h, one task per block of rows
// (at::parallel_for). Pass A walks the row in blocks of kBlock columns: the block's maxima, then
// its sums from L1 with those maxima, merged into the row's statistics with flkd_stats_merge
// (online softmax at block granularity), so the row crosses memory once; passes B and C read it
// again from L2. The per-column formulas (flkd_term, flkd_grad) run on whole vectors through
// VecOps; columns that a probability shift, label smoothing, the CE label or a top-k id make
// special are redone in scalars by the header's column functions.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/fast_exp.h"
#include "cpu/fused_linear_kd_args.h"
#include "cpu/vec_lanes.h"
#include "tskd_fast/fused_linear_kd_math.h"

namespace tskd_fast::cpu::CPU_CAPABILITY {

// exp of arguments <= 0 (or -inf): base 2 with the float polynomial of fast_exp.h; ATen's exp in
// double (the float64 path is the one gradcheck runs).
template <typename T>
inline Vectorized<T> flkd_vexp(const Vectorized<T>& x) {
  return x.exp();
}
template <>
inline Vectorized<float> flkd_vexp(const Vectorized<float>& x) {
  return exp2_nonpositive(x * Vectorized<float>(static_cast<float>(M_LOG2E)));
}

// The Ops policy of fused_linear_kd_math.h for at::vec vectors: comparisons give lane masks.
template <typename T>
struct VecOps {
  using V = Vectorized<T>;
  using Mask = Vectorized<T>;
  static V splat(T x) { return V(x); }
  static V exp(V x) { return flkd_vexp(x); }
  static V log(V x) { return x.log(); }
  static V abs(V x) { return x.abs(); }
  static Mask gt(V a, V b) { return a > b; }
  static V select(Mask m, V a, V b) { return V::blendv(b, a, m); }
};

template <typename scalar_t>
class FlkdRowKernel {
  using L = Lanes<scalar_t>;
  using T = typename L::opmath;
  using Vec = typename L::Vec;
  using Ops = VecOps<T>;
  static constexpr int W = L::kWidth;
  static constexpr int P = L::kParts;
  static constexpr int VW = Vec::size();
  static constexpr int64_t kBlock = 2048;  // columns per pass-A block: both rows' block in L1
  static_assert(kBlock % W == 0, "a block holds whole steps");

 public:
  explicit FlkdRowKernel(const FlkdRowsArgs& a)
      : a_(a),
        o_(flkd_options<T>(a.divergence, T(a.beta), a.ka, T(a.lsr_p), a.scale_tau2, T(a.ce_weight),
                           a.ignore_index, T(a.grad_scale), a.classes)),
        classes_(a.classes),
        s_ids_(a.topk),
        logprobs_(a.topk) {}

  void run(int64_t row) {
    scalar_t* s = static_cast<scalar_t*>(a_.student) + row * a_.student_row_stride;
    T* loss = static_cast<T*>(a_.row_loss) + row;
    const T tau = static_cast<const T*>(a_.temperature)[row];
    const bool has_target = a_.target != nullptr;
    const int64_t label = has_target ? a_.target[row] : a_.ignore_index;
    if (has_target && label == a_.ignore_index) {
      *loss = T(0);
      if (a_.compute_grad) std::fill(s, s + classes_, static_cast<scalar_t>(0));
      return;
    }
    if (a_.topk_ids != nullptr) {
      run_topk(row, s, loss, tau, has_target, label);
      return;
    }
    const scalar_t* t = static_cast<const scalar_t*>(a_.teacher) + row * a_.teacher_row_stride;
    const bool ce_own = flkd_ce_own_exp(o_.ce_weight, has_target, tau);
    const bool want_argmax = has_target && a_.ka != kKaNone;
    const FlkdStats<T> st = pass_a(s, t, T(1) / tau, want_argmax, ce_own);
    FlkdRow<T> r = flkd_row_setup(st, o_, tau, has_target, label);
    if (!r.finite) {
      fill_nan(s, loss);
      return;
    }
    if (r.label >= 0) {
      r.s_at_label = static_cast<T>(s[r.label]);
      r.t_at_label = static_cast<T>(t[r.label]);
    }
    if (r.argmax >= 0) r.s_at_argmax = static_cast<T>(s[r.argmax]);
    FlkdResult<T> res;
    if (flkd_needs_sums_pass(r, o_.divergence)) {
      res = flkd_result_of_sums(pass_b(s, t, r), o_.divergence);
    } else {
      res = flkd_result_online(flkd_online_divergence(st, r, o_.divergence), o_.divergence);
    }
    *loss = flkd_row_loss(r, res, o_);
    if (!a_.compute_grad) return;
    const FlkdGradCoefs<T> c = flkd_grad_coefs(r, res, o_);
    pass_c(s, t, r, c, tau);
    // The label and argmax columns from their saved logits (pass C has overwritten them).
    if (r.argmax >= 0) {
      s[r.argmax] = static_cast<scalar_t>(
          flkd_grad_column(r, o_, c, r.argmax, r.s_at_argmax, static_cast<T>(t[r.argmax])));
    }
    if (r.label >= 0) {
      s[r.label] =
          static_cast<scalar_t>(flkd_grad_column(r, o_, c, r.label, r.s_at_label, r.t_at_label));
    }
  }

 private:
  void fill_nan(scalar_t* s, T* loss) {
    *loss = std::numeric_limits<T>::quiet_NaN();
    if (a_.compute_grad) std::fill(s, s + classes_, static_cast<scalar_t>(*loss));
  }

  // One step of W columns at k: `count` < W only at the row's end, where the missing lanes load
  // as 0 (callers mask them).
  static void load(const scalar_t* x, int64_t k, int count, Vec* out) {
    if (count == W) {
      L::load(x + k, out);
    } else {
      L::load(x + k, out, count);
    }
  }

  static int lanes(int count, int part) { return std::clamp(count - part * VW, 0, VW); }

  // Walks columns [begin, end) in steps: f(k, count).
  template <typename F>
  static void steps(int64_t begin, int64_t end, F&& f) {
    const int64_t full = begin + (end - begin) / W * W;
    for (int64_t k = begin; k < full; k += W) f(k, W);
    if (full < end) f(full, static_cast<int>(end - full));
  }

  // Pass A: the row's FlkdStats, one block of columns at a time. t == nullptr: student only
  // (top-k rows; the teacher fields stay empty).
  FlkdStats<T> pass_a(const scalar_t* s, const scalar_t* t, T inv_tau, bool want_argmax,
                      bool ce_own) {
    FlkdStats<T> st = flkd_stats_empty<T>();
    for (int64_t k0 = 0; k0 < classes_; k0 += kBlock) {
      const int64_t n = std::min(kBlock, classes_ - k0);
      st = flkd_stats_merge(
          st, block_stats(s + k0, t ? t + k0 : nullptr, k0, n, inv_tau, want_argmax, ce_own),
          o_.divergence, inv_tau);
    }
    return st;
  }

  FlkdStats<T> block_stats(const scalar_t* s, const scalar_t* t, int64_t k0, int64_t n, T inv_tau,
                           bool want_argmax, bool ce_own) {
    const Vec ninf(-std::numeric_limits<T>::infinity());
    Vec smax(ninf), tmax(ninf);
    steps(0, n, [&](int64_t k, int count) __attribute__((always_inline)) {
      Vec sp[P], tp[P];
      load(s, k, count, sp);
      if (t) load(t, k, count, tp);
      for (int i = 0; i < P; ++i) {
        const int valid = lanes(count, i);
        smax = at::vec::maximum(smax, Vec::set(ninf, sp[i], valid));
        if (t) tmax = at::vec::maximum(tmax, Vec::set(ninf, tp[i], valid));
      }
    });
    FlkdStats<T> st = flkd_stats_empty<T>();
    st.s_max = reduce_max(smax);
    st.t_max = t ? reduce_max(tmax) : st.t_max;
    st.t_argmax = (t && want_argmax) ? k0 + first_index_of(t, n, st.t_max) : k0;
    const bool s_ok = flkd_finite(st.s_max), t_ok = t == nullptr || flkd_finite(st.t_max);
    if (!s_ok || !t_ok) {
      // A block of -inf only, or a NaN / +inf (the row becomes NaN): column by column.
      FlkdStats<T> slow = flkd_stats_empty<T>();
      for (int64_t k = 0; k < n; ++k) {
        const T tk = t ? static_cast<T>(t[k]) : -std::numeric_limits<T>::infinity();
        flkd_stats_push(slow, static_cast<T>(s[k]), tk, k0 + k, t ? o_.divergence : kJsd, inv_tau);
      }
      slow.t_argmax = st.t_argmax;
      if (!t) slow.t_max = -std::numeric_limits<T>::infinity();
      return slow;
    }
    const bool fkl = t && o_.divergence == kForwardKl, rkl = t && o_.divergence == kReverseKl;
    const Vec inv_tau_v(inv_tau), zmax(st.s_max), vmax(t ? st.t_max : T(0)), zero(T(0));
    Vec s_sum(0), t_sum(0), ce_sum(0), cross(0);
    steps(0, n, [&](int64_t k, int count) __attribute__((always_inline)) {
      Vec sp[P], tp[P];
      load(s, k, count, sp);
      if (t) load(t, k, count, tp);
      for (int i = 0; i < P; ++i) {
        const int valid = lanes(count, i);
        const Vec zc = sp[i] - zmax;
        const Vec eb = flkd_vexp(Vec::set(ninf, zc * inv_tau_v, valid));
        s_sum += eb;
        if (ce_own) ce_sum += flkd_vexp(Vec::set(ninf, zc, valid));
        if (t) {
          const Vec ea = flkd_vexp(Vec::set(ninf, (tp[i] - vmax) * inv_tau_v, valid));
          t_sum += ea;
          if (fkl) cross += Vec::blendv(ea * (tp[i] - sp[i]), zero, ea == zero);
          if (rkl) cross += Vec::blendv(eb * (sp[i] - tp[i]), zero, eb == zero);
        }
      }
    });
    st.s_sum = reduce_sum(s_sum);
    st.ce_sum = reduce_sum(ce_sum);
    st.t_sum = reduce_sum(t_sum);
    st.cross = reduce_sum(cross);
    return st;
  }

  // log q and q of one part (masked lanes: -inf and 0).
  struct Probs {
    Vec log_p, p, log_q, q;
  };

  Probs probs(const Vec& s, const Vec* t, const FlkdRow<T>& r, int valid) const {
    const Vec ninf(-std::numeric_limits<T>::infinity()), inv_tau(r.inv_tau);
    Probs x;
    x.log_q = Vec::set(ninf, (s - Vec(r.s_max)) * inv_tau - Vec(r.s_logz), valid);
    x.q = flkd_vexp(x.log_q);
    if (t == nullptr) {  // label-smoothed rows: the off value everywhere (the label is redone)
      x.log_p = Vec::set(ninf, Vec(o_.log_off), valid);
    } else {
      x.log_p = Vec::set(ninf, (*t - Vec(r.t_max)) * inv_tau - Vec(r.t_logz), valid);
    }
    x.p = flkd_vexp(x.log_p);
    return x;
  }

  // The term the vector loops compute at column k: the teacher unswapped, or the smoothed
  // target's off value.
  FlkdTerm<T> vector_term(const FlkdRow<T>& r, T s, T t) const {
    const T log_q = flkd_log_q(r, s);
    const T log_p = r.target == kTargetSmoothed ? o_.log_off : flkd_log_p(r, t);
    return flkd_term<ScalarOps<T>>(o_.divergence, o_.mix, math_exp(log_p), log_p, math_exp(log_q),
                                   log_q);
  }

  // Pass B: sum of flkd_term over the row.
  FlkdSums<T> pass_b(const scalar_t* s, const scalar_t* t, const FlkdRow<T>& r) {
    const bool smoothed = r.target == kTargetSmoothed;
    Vec loss(0), u(0);
    steps(0, classes_, [&](int64_t k, int count) __attribute__((always_inline)) {
      Vec sp[P], tp[P];
      load(s, k, count, sp);
      if (!smoothed) load(t, k, count, tp);
      for (int i = 0; i < P; ++i) {
        const Probs x = probs(sp[i], smoothed ? nullptr : &tp[i], r, lanes(count, i));
        const FlkdTerm<Vec> term =
            flkd_term<Ops>(o_.divergence, o_.mix, x.p, x.log_p, x.q, x.log_q);
        loss += term.loss;
        u += term.u;
      }
    });
    FlkdSums<T> sums{reduce_sum(loss), reduce_sum(u)};
    // The label (and the argmax of a swapped row) see another target than the loop gave them.
    auto redo = [&](int64_t k, T s_k) {
      const T t_k = static_cast<T>(t[k]);
      const FlkdTerm<T> wrong = vector_term(r, s_k, t_k);
      const FlkdTerm<T> right = flkd_term_column(r, o_, k, s_k, t_k);
      sums.loss += right.loss - wrong.loss;
      sums.u += right.u - wrong.u;
    };
    if (r.target != kTargetTeacher) redo(r.label, r.s_at_label);
    if (r.argmax >= 0) redo(r.argmax, r.s_at_argmax);
    return sums;
  }

  // Pass C: the gradient of every column, written over the student row.
  void pass_c(scalar_t* s, const scalar_t* t, const FlkdRow<T>& r, const FlkdGradCoefs<T>& c,
              T tau) {
    if (c.nan) return;
    const bool smoothed = r.target == kTargetSmoothed;
    const bool ce = c.ce != T(0), ce_own = ce && tau != T(1);
    const Vec ninf(-std::numeric_limits<T>::infinity());
    const Vec ce_shift(r.s_max + r.ce_logz), ce_coef(c.ce), kd(c.kd), g_bar(c.g_bar);
    steps(0, classes_, [&](int64_t k, int count) __attribute__((always_inline)) {
      Vec sp[P], tp[P], g[P];
      load(s, k, count, sp);
      if (!smoothed) load(t, k, count, tp);
      for (int i = 0; i < P; ++i) {
        const int valid = lanes(count, i);
        const Probs x = probs(sp[i], smoothed ? nullptr : &tp[i], r, valid);
        const FlkdTerm<Vec> term =
            flkd_term<Ops>(o_.divergence, o_.mix, x.p, x.log_p, x.q, x.log_q);
        Vec gi = kd * (term.u - x.q * g_bar);
        if (ce) {
          const Vec sm = ce_own ? flkd_vexp(Vec::set(ninf, sp[i] - ce_shift, valid)) : x.q;
          gi = at::vec::fmadd(ce_coef, sm, gi);
        }
        g[i] = gi;
      }
      if (count == W) {
        L::store(s + k, g);
      } else {
        L::store(s + k, g, count);
      }
    });
  }

  // A row of a top-k teacher (tskd_fast/fused_linear_kd_math.h, top-k teacher).
  void run_topk(int64_t row, scalar_t* s, T* loss, T tau, bool has_target, int64_t label) {
    const int64_t kk = a_.topk;
    const int64_t* ids = a_.topk_ids + row * kk;
    const T* lp = static_cast<const T*>(a_.topk_logprobs) + row * kk;
    // The ids are in range and distinct: checked on the host before the kernel
    // (csrc/checks/fused_linear_kd.cpp).
    const bool label_used = has_target && label != a_.ignore_index;
    const T s_label = label_used ? static_cast<T>(s[label]) : T(0);
    for (int64_t i = 0; i < kk; ++i) {
      s_ids_[i] = static_cast<T>(s[ids[i]]);
      logprobs_[i] = lp[i];
      s[ids[i]] = static_cast<scalar_t>(-std::numeric_limits<T>::infinity());
    }
    const T inv_tau = T(1) / tau;
    const bool ce_own = flkd_ce_own_exp(o_.ce_weight, has_target, tau);
    FlkdStats<T> st = pass_a(s, nullptr, inv_tau, false, ce_own);
    const T tail_sum = flkd_topk_student(st, s_ids_.data(), kk, inv_tau, ce_own);
    FlkdTopkRow<T> tk{};
    FlkdRow<T> r = flkd_topk_setup(tk, st, o_, logprobs_.data(), kk, tau, has_target, label);
    r.s_at_label = s_label;
    if (!r.finite) {
      fill_nan(s, loss);
      return;
    }
    FlkdSums<T> sums{T(0), T(0)};
    for (int64_t i = 0; i < kk; ++i) {
      const FlkdTerm<T> term = flkd_topk_listed_term(tk, r, o_, logprobs_[i], s_ids_[i]);
      sums.loss += term.loss;
      sums.u += term.u;
    }
    const FlkdTerm<T> tail = flkd_topk_tail_term(tk, r, o_, tail_sum);
    sums.loss += tail.loss;
    sums.u += tail.u;
    const FlkdResult<T> res = flkd_result_of_sums(sums, o_.divergence);
    *loss = flkd_row_loss(r, res, o_);
    if (!a_.compute_grad) return;
    const FlkdGradCoefs<T> c = flkd_grad_coefs(r, res, o_);
    const T tail_coef = flkd_topk_tail_coef(tk, c);
    // Every column as a tail column (the listed ones hold -inf: 0), then the listed ids.
    const bool ce = c.ce != T(0), ce_own_c = ce && tau != T(1);
    const Vec ninf(-std::numeric_limits<T>::infinity()), inv(r.inv_tau);
    const Vec shift(r.s_max), logz(r.s_logz), ce_shift(r.s_max + r.ce_logz), coef(tail_coef),
        ce_coef(c.ce);
    steps(0, classes_, [&](int64_t k, int count) __attribute__((always_inline)) {
      Vec sp[P], g[P];
      load(s, k, count, sp);
      for (int i = 0; i < P; ++i) {
        const int valid = lanes(count, i);
        const Vec q = flkd_vexp(Vec::set(ninf, (sp[i] - shift) * inv - logz, valid));
        Vec gi = coef * q;
        if (ce) {
          const Vec sm = ce_own_c ? flkd_vexp(Vec::set(ninf, sp[i] - ce_shift, valid)) : q;
          gi = at::vec::fmadd(ce_coef, sm, gi);
        }
        g[i] = gi;
      }
      if (count == W) {
        L::store(s + k, g);
      } else {
        L::store(s + k, g, count);
      }
    });
    bool label_listed = false;
    for (int64_t i = 0; i < kk; ++i) {
      T g = flkd_topk_listed_grad(tk, r, o_, c, logprobs_[i], s_ids_[i]);
      if (ids[i] == r.label) {
        g = flkd_grad_label(c, g);
        label_listed = true;
      }
      s[ids[i]] = static_cast<scalar_t>(g);
    }
    if (r.label >= 0 && ce && !label_listed) {
      const T q = math_exp(flkd_log_q(r, s_label));
      const T sm = math_exp(s_label - r.s_max - r.ce_logz);
      s[r.label] = static_cast<scalar_t>(flkd_grad_label(c, tail_coef * q + c.ce * sm));
    }
  }

  const FlkdRowsArgs& a_;
  const FlkdOptions<T> o_;
  const int64_t classes_;
  // Per-task buffers of a top-k row: the listed student logits and log-probabilities.
  std::vector<T> s_ids_;
  std::vector<T> logprobs_;
};

void fused_linear_kd_rows_kernel(const FlkdRowsArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, args.dtype, "tskd_fast::fused_linear_kd_rows", [&] {
        // Enough rows per task that a task streams at least ~64 KiB of logits.
        const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(args.classes, 1));
        at::parallel_for(0, args.rows, grain, [&](int64_t begin, int64_t end) {
          FlkdRowKernel<scalar_t> rows(args);
          for (int64_t row = begin; row < end; ++row) rows.run(row);
        });
      });
}

}  // namespace tskd_fast::cpu::CPU_CAPABILITY
