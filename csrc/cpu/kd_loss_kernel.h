#pragma once

// The fused KD loss on the CPU: one task per block of rows (at::parallel_for); per row one read
// of the student and teacher rows from memory, the exponentials kept in a per-thread buffer so
// the gradient pass reuses them instead of recomputing them, and one write of the gradient.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>

#include "cpu/kernel_args.h"
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

 public:
  explicit KdLossRows(const KdLossArgs& a)
      : a_(a),
        classes_(a.classes),
        full_(a.classes - a.classes % W),
        smoothed_(smoothed_target<T>(T(a.lsr_p), a.classes)),
        ce_weight_(T(a.ce_weight)),
        buffer_(a.row_grad ? new T[3 * a.classes] : nullptr) {}

  void run(int64_t row) {
    const scalar_t* z = static_cast<const scalar_t*>(a_.student) + row * a_.student_row_stride;
    const scalar_t* v = static_cast<const scalar_t*>(a_.teacher) + row * a_.teacher_row_stride;
    scalar_t* grad = a_.row_grad ? static_cast<scalar_t*>(a_.row_grad) + row * classes_ : nullptr;
    T* loss = static_cast<T*>(a_.row_loss) + row;
    const T tau = static_cast<const T*>(a_.temperature)[row];
    const int64_t label = a_.target ? a_.target[row] : a_.ignore_index;

    KdRowInfo<T> r{};
    r.student_max = row_max(z, classes_);
    const T teacher_max = row_max(v, classes_);
    // NaN or +inf anywhere, or a row of only -inf, makes the row NaN (as log_softmax would);
    // single -inf logits are masked classes and handled below.
    if (!std::isfinite(r.student_max) || !std::isfinite(teacher_max)) {
      fill_nan(loss, grad);
      return;
    }
    const bool label_used = a_.target != nullptr && label != a_.ignore_index;
    const int64_t argmax = (label_used && a_.ka != kKaNone) ? first_index_of(v, classes_, teacher_max) : -1;
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

    const KdRowSums<T> sums = gather(z, v, r, teacher_max, ce_own_exp);
    *loss = kd_row_loss(sums, r, smoothed_, ce_weight_);
    if (grad == nullptr) return;

    T* exp_b = buffer_.get();
    T* exp_a = exp_b + classes_;
    T* exp_z = ce_own_exp ? exp_a + classes_ : exp_b;
    if (r.target == kTargetSwapped) std::swap(exp_a[argmax], exp_a[label]);
    const KdGradCoefs<T> coefs = kd_grad_coefs(sums, r, ce_weight_);
    write_grad(grad, coefs, exp_b, exp_a, exp_z, r.target);
    if (label_used) {  // the label's element carries the -ce_weight and the smoothed `on` value
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

  // One pass over the row: the sums of KdRowSums, and the exponentials into the buffer.
  KdRowSums<T> gather(const scalar_t* z, const scalar_t* v, const KdRowInfo<T>& r, T teacher_max,
                      bool ce_own_exp) {
    const bool smoothed = r.target == kTargetSmoothed;
    const bool keep = buffer_ != nullptr;
    T* exp_b = buffer_.get();
    T* exp_a = keep ? exp_b + classes_ : nullptr;
    T* exp_z = keep ? exp_a + classes_ : nullptr;
    const Vec zmax(r.student_max), vmax(teacher_max), itau(r.inv_tau), zero(T(0));
    Vec s_exp_b(0), s_exp_a(0), s_cross(0), s_b(0), s_exp_z(0);
    Vec zp[P], vp[P];
    for (int64_t k = 0; k < full_; k += W) {
      L::load(z + k, zp);
      if (!smoothed) L::load(v + k, vp);
      for (int i = 0; i < P; ++i) {
        const int64_t at = k + i * VW;
        const Vec zc = zp[i] - zmax;
        const Vec b = zc * itau;
        const Vec eb = b.exp();
        s_exp_b += eb;
        if (keep) eb.store(exp_b + at);
        if (smoothed) {
          s_b += b;
        } else {
          const Vec a = (vp[i] - vmax) * itau;
          const Vec ea = a.exp();
          s_exp_a += ea;
          // exp(a) (a - b), with 0 where exp(a) == 0 (kl_cross_term)
          s_cross += Vec::blendv(ea * (a - b), zero, ea == zero);
          if (keep) ea.store(exp_a + at);
        }
        if (ce_own_exp) {
          const Vec ez = zc.exp();
          s_exp_z += ez;
          if (keep) ez.store(exp_z + at);
        }
      }
    }
    KdRowSums<T> s{};
    s.student_exp = reduce_sum(s_exp_b);
    s.teacher_exp = reduce_sum(s_exp_a);
    s.cross = reduce_sum(s_cross);
    s.student_scaled = reduce_sum(s_b);
    s.ce_exp = reduce_sum(s_exp_z);
    for (int64_t k = full_; k < classes_; ++k) {  // the row's tail, element by element
      const T zc = static_cast<T>(z[k]) - r.student_max;
      const T b = zc * r.inv_tau;
      const T eb = std::exp(b);
      s.student_exp += eb;
      if (keep) exp_b[k] = eb;
      if (smoothed) {
        s.student_scaled += b;
      } else {
        const T a = (static_cast<T>(v[k]) - teacher_max) * r.inv_tau;
        const T ea = std::exp(a);
        s.teacher_exp += ea;
        s.cross += kl_cross_term(ea, a, b);
        if (keep) exp_a[k] = ea;
      }
      if (ce_own_exp) {
        const T ez = std::exp(zc);
        s.ce_exp += ez;
        if (keep) exp_z[k] = ez;
      }
    }
    if (r.ce_active && !ce_own_exp) s.ce_exp = s.student_exp;
    return s;
  }

  void write_grad(scalar_t* grad, const KdGradCoefs<T>& c, const T* exp_b, const T* exp_a,
                  const T* exp_z, int target) {
    const bool smoothed = target == kTargetSmoothed;
    const Vec cs(c.student), ct(c.teacher), cq(c.smoothed * smoothed_.off), cce(c.ce);
    const bool ce = c.ce != T(0);
    Vec g[P];
    for (int64_t k = 0; k < full_; k += W) {
      for (int i = 0; i < P; ++i) {
        const int64_t at = k + i * VW;
        Vec gi = cs * Vec::loadu(exp_b + at);
        gi = smoothed ? gi - cq : gi - ct * Vec::loadu(exp_a + at);
        if (ce) gi = gi + cce * Vec::loadu(exp_z + at);
        g[i] = gi;
      }
      L::store(grad + k, g);
    }
    for (int64_t k = full_; k < classes_; ++k) {
      grad[k] = static_cast<scalar_t>(kd_grad_element(c, exp_b[k], smoothed ? T(0) : exp_a[k],
                                                      smoothed_.off, exp_z[k], false));
    }
  }

  const KdLossArgs& a_;
  const int64_t classes_;
  const int64_t full_;
  const SmoothedTarget<T> smoothed_;
  const T ce_weight_;
  std::unique_ptr<T[]> buffer_;
};

void kd_loss_kernel(const KdLossArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.dtype, "tskd_fast::kd_loss", [&] {
    // Enough rows per task that a task streams at least ~64 KiB of logits.
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(args.classes, 1));
    at::parallel_for(0, args.rows, grain, [&](int64_t begin, int64_t end) {
      KdLossRows<scalar_t> rows(args);
      for (int64_t row = begin; row < end; ++row) rows.run(row);
    });
  });
}

}  // namespace tskd_fast::cpu::CPU_CAPABILITY
