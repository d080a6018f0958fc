#pragma once

// The fused KD loss on the CPU. One task per block of rows (at::parallel_for); per row:
//   pass 1  row maxima of z and v (the only pass that reads the logits from memory; the next
//           row is prefetched during pass 2, so memory and arithmetic overlap),
//   pass 2  the exponentials and sums of KdRowSums, the exponentials kept in a per-thread
//           buffer (the row is in L1/L2 now),
//   pass 3  the gradient from the buffered exponentials, written once.
// Exponentials are taken in base 2 with log2(e) folded into the 1/tau scaling (fast_exp.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <memory>

#include "cpu/fast_exp.h"
#include "cpu/kd_loss_args.h"
#include "cpu/vec_lanes.h"
#include "tskd_fast/kd_loss_math.h"

namespace tskd_fast::cpu::CPU_CAPABILITY {

template <typename scalar_t>
class KdLossRows {
  using L = Lanes<scalar_t>;
  using T = typename L::opmath;
  using Vec = typename L::Vec;
  static constexpr int W = L::kWidth;
  static constexpr int P = L::kParts;
  static constexpr int VW = Vec::size();
  static constexpr T kLog2e = T(M_LOG2E);

 public:
  explicit KdLossRows(const KdLossArgs& a)
      : a_(a),
        classes_(a.classes),
        full_(a.classes - a.classes % W),
        smoothed_(smoothed_target<T>(T(a.lsr_p), a.classes)),
        ce_weight_(T(a.ce_weight)),
        buffer_(a.row_grad ? new T[3 * (a.classes + W)] : nullptr) {}

  // `prefetch_next`: pull the next row into the cache while this row is computed.
  void run(int64_t row, bool prefetch_next) {
    const scalar_t* z = static_cast<const scalar_t*>(a_.student) + row * a_.student_row_stride;
    const scalar_t* v = static_cast<const scalar_t*>(a_.teacher) + row * a_.teacher_row_stride;
    const scalar_t* next_z = prefetch_next ? z + a_.student_row_stride : nullptr;
    const scalar_t* next_v = prefetch_next ? v + a_.teacher_row_stride : nullptr;
    scalar_t* grad = a_.row_grad ? static_cast<scalar_t*>(a_.row_grad) + row * classes_ : nullptr;
    T* loss = static_cast<T*>(a_.row_loss) + row;
    const T tau = static_cast<const T*>(a_.temperature)[row];
    const int64_t label = a_.target ? a_.target[row] : a_.ignore_index;

    KdRowInfo<T> r{};
    r.student_max = row_max(z, classes_);
    const T teacher_max = row_max(v, classes_);
    // NaN or +inf anywhere, or a row of only -inf, makes the row NaN (as log_softmax would);
    // single -inf logits are masked classes.
    if (!std::isfinite(r.student_max) || !std::isfinite(teacher_max)) {
      fill_nan(loss, grad);
      return;
    }
    const bool label_used = a_.target != nullptr && label != a_.ignore_index;
    const int64_t argmax =
        (label_used && a_.ka != kKaNone) ? first_index_of(v, classes_, teacher_max) : -1;
    r.target = kd_row_target(a_.ka, label, a_.ignore_index, argmax);
    r.ce_active = label_used && a_.ce_weight != 0.0;
    r.inv_tau = T(1) / tau;
    r.scale = a_.scale_tau2 ? tau * tau : T(1);
    if (label_used) r.student_at_label = static_cast<T>(z[label]);
    if (r.target == kTargetSwapped) {
      r.student_at_argmax = static_cast<T>(z[argmax]);
      r.teacher_exp_at_label = std::exp((static_cast<T>(v[label]) - teacher_max) * r.inv_tau);
    }
    // With tau == 1 the CE exponentials are the student's.
    const bool ce_own_exp = r.ce_active && tau != T(1);

    KdRowSums<T> sums = gather<false>(z, v, next_z, next_v, r, teacher_max, ce_own_exp);
    // With finite maxima the cross sum is non-finite only through exp(a) (v - z) at a student
    // -inf (+inf, a true infinite loss, unless exp(a) is 0 there) or a teacher -inf (a masked
    // class): such rows take the masked pass, which leaves out the terms where exp(a) == 0.
    if (!std::isfinite(sums.cross) && r.target != kTargetSmoothed) {
      sums = gather<true>(z, v, nullptr, nullptr, r, teacher_max, ce_own_exp);
    }
    *loss = kd_row_loss(sums, r, smoothed_, ce_weight_);
    if (grad == nullptr) return;

    T* exp_b = buffer_.get();
    T* exp_a = exp_b + classes_ + W;
    T* exp_z = ce_own_exp ? exp_a + classes_ + W : exp_b;
    if (r.target == kTargetSwapped) std::swap(exp_a[argmax], exp_a[label]);
    const KdGradCoefs<T> coefs = kd_grad_coefs(sums, r, ce_weight_, T(a_.grad_scale));
    write_grad(grad, coefs, exp_b, exp_a, exp_z, r.target);
    if (label_used) {  // the label's element carries -ce_weight and the smoothed `on` value
      const T teacher_exp = r.target == kTargetSmoothed ? T(0) : exp_a[label];
      grad[label] = static_cast<scalar_t>(
          kd_grad_element(coefs, exp_b[label], teacher_exp, smoothed_.on, exp_z[label], true));
    }
  }

 private:
  void fill_nan(T* loss, scalar_t* grad) {
    *loss = std::numeric_limits<T>::quiet_NaN();
    if (grad) std::fill(grad, grad + classes_, static_cast<scalar_t>(*loss));
  }

  // Pass 2. In base 2: b2 = (z - max z) log2(e) / tau, a2 likewise for v, so exp(b) = 2^b2; and
  //   cross = sum exp(a) (a - b) = (1/tau) sum exp(a) (v - z) + (max z - max v) / tau * sum exp(a),
  // one multiply and one add per element. kMasked leaves out the classes where exp(a) == 0
  // (kl_cross_term): a teacher -inf, or an exponential that underflowed.
  template <bool kMasked>
  KdRowSums<T> gather(const scalar_t* z, const scalar_t* v, const scalar_t* next_z,
                      const scalar_t* next_v, const KdRowInfo<T>& r, T teacher_max,
                      bool ce_own_exp) {
    const bool smoothed = r.target == kTargetSmoothed;
    const bool keep = buffer_ != nullptr;
    T* exp_b = buffer_.get();
    T* exp_a = keep ? exp_b + classes_ + W : nullptr;
    T* exp_z = keep ? exp_a + classes_ + W : nullptr;
    const T scale2 = r.inv_tau * kLog2e;
    const Vec scale2_v(scale2), zmax(r.student_max), vmax(teacher_max), log2e(kLog2e);
    const Vec zero(T(0)), neg_inf(-std::numeric_limits<T>::infinity());
    Vec s_exp_b(0), s_exp_a(0), s_cross(0), s_z(0), s_exp_z(0);

    // One step of W elements; `count` < W only for the row's tail, whose missing lanes load as 0
    // and get -inf exponents (so they add nothing) and are never stored.
    auto step = [&](int64_t k, int count) __attribute__((always_inline)) {
      Vec zp[P], vp[P];
      if (count == W) {
        L::load(z + k, zp);
        if (!smoothed) L::load(v + k, vp);
      } else {
        L::load(z + k, zp, count);
        if (!smoothed) L::load(v + k, vp, count);
      }
      for (int i = 0; i < P; ++i) {
        const int64_t at = k + i * VW;
        const int valid = std::clamp(count - i * VW, 0, VW);
        // Subtracting the maximum first keeps the maximum's exponent exactly 0, as in log_softmax.
        const Vec zc = zp[i] - zmax;
        const Vec b2 = Vec::set(neg_inf, zc * scale2_v, valid);
        const Vec eb = exp2_nonpositive(b2);
        s_exp_b += eb;
        if (keep) eb.store(exp_b + at);
        if (smoothed) {
          s_z += zp[i];
        } else {
          const Vec a2 = Vec::set(neg_inf, (vp[i] - vmax) * scale2_v, valid);
          const Vec ea = exp2_nonpositive(a2);
          s_exp_a += ea;
          const Vec term = ea * (vp[i] - zp[i]);
          s_cross += kMasked ? Vec::blendv(term, zero, ea == zero) : term;
          if (keep) ea.store(exp_a + at);
        }
        if (ce_own_exp) {
          const Vec ez = exp2_nonpositive(Vec::set(neg_inf, zc * log2e, valid));
          s_exp_z += ez;
          if (keep) ez.store(exp_z + at);
        }
      }
    };
    for (int64_t k = 0; k < full_; k += W) {
      if (next_z != nullptr) {  // one step covers one 64-byte line of each row
        __builtin_prefetch(next_z + k);
        __builtin_prefetch(next_v + k);
      }
      step(k, W);
    }
    if (full_ < classes_) step(full_, static_cast<int>(classes_ - full_));

    KdRowSums<T> s{};
    s.student_exp = reduce_sum(s_exp_b);
    s.teacher_exp = reduce_sum(s_exp_a);
    const T zoff = r.student_max * r.inv_tau, voff = teacher_max * r.inv_tau;
    s.cross = r.inv_tau * reduce_sum(s_cross) + (zoff - voff) * s.teacher_exp;
    s.student_scaled = r.inv_tau * reduce_sum(s_z) - T(classes_) * zoff;
    s.ce_exp = ce_own_exp ? reduce_sum(s_exp_z) : s.student_exp;
    return s;
  }

  // Pass 3: dloss/dz_k = c.student 2^b2_k - c.teacher 2^a2_k (or - c.smoothed q_k) + c.ce e_k.
  void write_grad(scalar_t* grad, const KdGradCoefs<T>& c, const T* exp_b, const T* exp_a,
                  const T* exp_z, int target) {
    const bool smoothed = target == kTargetSmoothed;
    const bool ce = c.ce != T(0);
    const Vec cs(c.student), ct(c.teacher), cq(c.smoothed * smoothed_.off), cce(c.ce);
    auto step = [&](int64_t k, int count) __attribute__((always_inline)) {
      Vec g[P];
      for (int i = 0; i < P; ++i) {
        const int64_t at = k + i * VW;
        Vec gi = cs * Vec::loadu(exp_b + at);
        gi = smoothed ? gi - cq : at::vec::fnmadd(ct, Vec::loadu(exp_a + at), gi);
        if (ce) gi = at::vec::fmadd(cce, Vec::loadu(exp_z + at), gi);
        g[i] = gi;
      }
      if (count == W) {
        L::store(grad + k, g);
      } else {
        L::store(grad + k, g, count);
      }
    };
    for (int64_t k = 0; k < full_; k += W) step(k, W);
    if (full_ < classes_) step(full_, static_cast<int>(classes_ - full_));
  }

  const KdLossArgs& a_;
  const int64_t classes_;
  const int64_t full_;
  const SmoothedTarget<T> smoothed_;
  const T ce_weight_;
  // exp_b, exp_a, exp_z, each padded by one step so the tail step may write whole vectors.
  std::unique_ptr<T[]> buffer_;
};

void kd_loss_kernel(const KdLossArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.dtype, "tskd_fast::kd_loss", [&] {
    // Enough rows per task that a task streams at least ~64 KiB of logits.
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(args.classes, 1));
    at::parallel_for(0, args.rows, grain, [&](int64_t begin, int64_t end) {
      KdLossRows<scalar_t> rows(args);
      for (int64_t row = begin; row < end; ++row) rows.run(row, row + 1 < end);
    });
  });
}

}  // namespace tskd_fast::cpu::CPU_CAPABILITY
