// Host-side tests of the KD-loss row math shared by the CPU and CUDA kernels
// (tskd_fast/kd_loss_math.h): each function against a direct double-precision computation from the
// definitions (kd_loss_reference.h), and the gradient against finite differences of the loss.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "kd_loss_reference.h"
#include "test_check.h"
#include "tskd_fast/kd_loss_math.h"

namespace tskd_fast::testing {
namespace {

template <typename T>
struct HeaderRow {
  T loss;
  std::vector<T> grad;
};

// One row the way a kernel drives the shared functions: maxima, target kind, the sums of
// KdRowSums, then kd_row_loss and the per-element gradient.
template <typename T>
HeaderRow<T> kd_row_via_headers(const Row& zd, const Row& vd, int64_t label, double tau_d,
                                const KdOptions& o) {
  const int64_t classes = static_cast<int64_t>(zd.size());
  const std::vector<T> z(zd.begin(), zd.end()), v(vd.begin(), vd.end());
  const T tau = static_cast<T>(tau_d);
  T zmax = -std::numeric_limits<T>::infinity(), vmax = zmax;
  for (int64_t k = 0; k < classes; ++k) {
    zmax = std::max(zmax, z[k]);
    vmax = std::max(vmax, v[k]);
  }
  const bool label_used = label != o.ignore_index;
  int64_t argmax = -1;
  if (label_used && o.ka != kKaNone) {
    for (argmax = 0; v[argmax] != vmax;) ++argmax;
  }
  KdRowInfo<T> r{};
  r.target = kd_row_target(o.ka, label, o.ignore_index, argmax);
  r.ce_active = label_used && o.ce_weight != 0.0;
  r.inv_tau = T(1) / tau;
  r.scale = o.scale_tau2 ? tau * tau : T(1);
  r.student_max = zmax;
  if (label_used) r.student_at_label = z[label];
  if (r.target == kTargetSwapped) {
    r.student_at_argmax = z[argmax];
    r.teacher_exp_at_label = std::exp((v[label] - vmax) * r.inv_tau);
  }
  const SmoothedTarget<T> st = smoothed_target<T>(static_cast<T>(o.lsr_p), classes);
  KdRowSums<T> s{};
  for (int64_t k = 0; k < classes; ++k) {
    const T b = (z[k] - zmax) * r.inv_tau, a = (v[k] - vmax) * r.inv_tau;
    s.student_exp += std::exp(b);
    s.teacher_exp += std::exp(a);
    s.cross += kl_cross_term(std::exp(a), a, b);
    s.student_scaled += b;
    s.ce_exp += std::exp(z[k] - zmax);
  }
  const T ce_weight = static_cast<T>(o.ce_weight);
  HeaderRow<T> out{kd_row_loss(s, r, st, ce_weight), std::vector<T>(classes)};
  const KdGradCoefs<T> c = kd_grad_coefs(s, r, ce_weight, T(1));
  for (int64_t k = 0; k < classes; ++k) {
    T exp_a = std::exp((v[k] - vmax) * r.inv_tau);
    if (r.target == kTargetSwapped && k == argmax) exp_a = r.teacher_exp_at_label;
    if (r.target == kTargetSwapped && k == label) exp_a = T(1);
    if (r.target == kTargetSmoothed) exp_a = T(0);
    const bool is_label = label_used && k == label;
    out.grad[k] = kd_grad_element(c, std::exp((z[k] - zmax) * r.inv_tau), exp_a,
                                  is_label ? st.on : st.off, std::exp(z[k] - zmax), is_label);
  }
  return out;
}

double max_abs(const Row& x) {
  double m = 1.0;
  for (double xk : x) m = std::max(m, std::fabs(xk));
  return m;
}

void test_row_target() {
  TSKD_CHECK(kd_row_target(kKaNone, 3, -100, 5) == kTargetTeacher, "ka none");
  TSKD_CHECK(kd_row_target(kKaProbShift, 3, -100, 5) == kTargetSwapped, "ps, wrong teacher");
  TSKD_CHECK(kd_row_target(kKaLabelSmooth, 3, -100, 5) == kTargetSmoothed, "lsr, wrong teacher");
  TSKD_CHECK(kd_row_target(kKaProbShift, 5, -100, 5) == kTargetTeacher, "ps, right teacher");
  TSKD_CHECK(kd_row_target(kKaLabelSmooth, 5, -100, 5) == kTargetTeacher, "lsr, right teacher");
  TSKD_CHECK(kd_row_target(kKaProbShift, -100, -100, 5) == kTargetTeacher, "ignored label");
  TSKD_CHECK(kd_row_target(kKaLabelSmooth, 7, 7, 2) == kTargetTeacher, "custom ignore_index");
}

void test_smoothed_target() {
  for (int64_t classes : {1, 2, 10, 1000}) {
    for (double p : {0.0, 0.5, 0.9, 1.0}) {
      const SmoothedTarget<double> t = smoothed_target<double>(p, classes);
      const double total = t.on + double(classes - 1) * t.off;
      if (classes > 1) TSKD_CHECK_CLOSE(total, 1.0, 1e-12, "C=%lld p=%g", (long long)classes, p);
      if (classes == 1) TSKD_CHECK(t.off == 0.0, "one class has no off value");
      double neg_entropy = 0.0;
      if (t.on > 0) neg_entropy += t.on * std::log(t.on);
      if (t.off > 0) neg_entropy += double(classes - 1) * t.off * std::log(t.off);
      TSKD_CHECK_CLOSE(t.neg_entropy, neg_entropy, 1e-12, "C=%lld p=%g", (long long)classes, p);
      const SmoothedTarget<float> f = smoothed_target<float>(float(p), classes);
      TSKD_CHECK_CLOSE(f.on, t.on, 1e-7, "float on");
      TSKD_CHECK_CLOSE(f.off, t.off, 1e-7, "float off");
    }
  }
}

// cross(unswapped) + correction == cross computed with the swapped teacher.
void test_swapped_cross_correction(std::mt19937& rng) {
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t classes = 2 + trial % 40;
    const Row z = random_row(rng, classes, 3.0), v = random_row(rng, classes, 3.0);
    const double tau = 0.5 + 0.1 * trial;
    const int64_t j = first_argmax(v);
    const int64_t label = (j + 1 + trial % (classes - 1)) % classes;  // never the argmax
    Row swapped = v;
    std::swap(swapped[j], swapped[label]);
    const double zmax = *std::max_element(z.begin(), z.end());
    const double vmax = v[j];
    double cross = 0.0, cross_swapped = 0.0;
    for (int64_t k = 0; k < classes; ++k) {
      const double b = (z[k] - zmax) / tau;
      const double a = (v[k] - vmax) / tau, as = (swapped[k] - vmax) / tau;
      cross += kl_cross_term(std::exp(a), a, b);
      cross_swapped += kl_cross_term(std::exp(as), as, b);
    }
    KdRowInfo<double> r{};
    r.inv_tau = 1.0 / tau;
    r.student_at_argmax = z[j];
    r.student_at_label = z[label];
    r.teacher_exp_at_label = std::exp((v[label] - vmax) / tau);
    TSKD_CHECK_CLOSE(cross + swapped_cross_correction(r), cross_swapped,
                     1e-12 * max_abs({cross, cross_swapped}), "trial %d", trial);
  }
}

void test_kl_cross_term_masks_empty_classes() {
  const double inf = kInf;
  TSKD_CHECK(kl_cross_term(0.0, -inf, -inf) == 0.0, "teacher and student both -inf");
  TSKD_CHECK(kl_cross_term(0.0, -inf, -1.0) == 0.0, "teacher -inf");
  TSKD_CHECK(kl_cross_term(0.5, -0.7, -inf) == inf, "student -inf where the teacher has mass");
  TSKD_CHECK(xlogx(0.0) == 0.0, "0 log 0 = 0");
}

// kd_row_loss and the gradient elements against the reference, in double (tight) and float.
void test_loss_and_gradient(std::mt19937& rng) {
  int cases = 0;
  for (int64_t ka : {0, 1, 2}) {
    for (double ce_weight : {0.0, 0.7}) {
      for (bool scale_tau2 : {true, false}) {
        for (double tau : {0.5, 1.0, 3.0}) {
          for (int64_t classes : {1, 2, 7, 50}) {
            for (int label_kind = 0; label_kind < 3; ++label_kind) {
              KdOptions o;
              o.ka = ka;
              o.ce_weight = ce_weight;
              o.scale_tau2 = scale_tau2;
              o.lsr_p = 0.8;
              const Row z = random_row(rng, classes, 2.5), v = random_row(rng, classes, 2.5);
              const int64_t j = first_argmax(v);
              // 0: a label the teacher misses (KA applies), 1: the teacher's argmax, 2: ignored.
              int64_t label = label_kind == 0 ? (j + 1) % classes : j;
              if (label_kind == 2) label = o.ignore_index;
              const KdRowResult ref = kd_row_reference(z, v, label, tau, o);
              const HeaderRow<double> d = kd_row_via_headers<double>(z, v, label, tau, o);
              const HeaderRow<float> f = kd_row_via_headers<float>(z, v, label, tau, o);
              const double scale = max_abs(ref.grad);
              TSKD_CHECK_CLOSE(d.loss, ref.loss, 1e-11 * std::max(1.0, std::fabs(ref.loss)),
                               "double loss ka=%lld ce=%g tau=%g C=%lld label_kind=%d",
                               (long long)ka, ce_weight, tau, (long long)classes, label_kind);
              TSKD_CHECK_CLOSE(f.loss, ref.loss, 2e-5 * std::max(1.0, std::fabs(ref.loss)),
                               "float loss ka=%lld ce=%g tau=%g C=%lld label_kind=%d",
                               (long long)ka, ce_weight, tau, (long long)classes, label_kind);
              for (int64_t k = 0; k < classes; ++k) {
                TSKD_CHECK_CLOSE(d.grad[k], ref.grad[k], 1e-11 * scale,
                                 "double grad[%lld] ka=%lld tau=%g C=%lld", (long long)k,
                                 (long long)ka, tau, (long long)classes);
                TSKD_CHECK_CLOSE(f.grad[k], ref.grad[k], 2e-6 * scale,
                                 "float grad[%lld] ka=%lld tau=%g C=%lld", (long long)k,
                                 (long long)ka, tau, (long long)classes);
              }
              ++cases;
            }
          }
        }
      }
    }
  }
  std::printf("loss and gradient vs reference: %d rows\n", cases);
}

// The header gradient is the derivative of the header loss (central differences in double).
void test_gradient_vs_finite_differences(std::mt19937& rng) {
  for (int64_t ka : {0, 1, 2}) {
    for (double ce_weight : {0.0, 0.4}) {
      for (double tau : {0.7, 1.0, 2.0}) {
        KdOptions o;
        o.ka = ka;
        o.ce_weight = ce_weight;
        const int64_t classes = 9;
        const Row z = random_row(rng, classes, 2.0), v = random_row(rng, classes, 2.0);
        const int64_t label = (first_argmax(v) + 4) % classes;
        const HeaderRow<double> at = kd_row_via_headers<double>(z, v, label, tau, o);
        for (int64_t k = 0; k < classes; ++k) {
          const double h = 1e-5;
          Row up = z, down = z;
          up[k] += h;
          down[k] -= h;
          const double fd = (kd_row_via_headers<double>(up, v, label, tau, o).loss -
                             kd_row_via_headers<double>(down, v, label, tau, o).loss) /
                            (2 * h);
          TSKD_CHECK_CLOSE(at.grad[k], fd, 1e-7, "k=%lld ka=%lld ce=%g tau=%g", (long long)k,
                           (long long)ka, ce_weight, tau);
        }
      }
    }
  }
}

// -inf teacher logits are classes without mass; a student -inf where the teacher has mass is an
// infinite loss with a finite gradient.
void test_masked_classes() {
  KdOptions o;
  o.ce_weight = 0.5;
  const Row z = {0.3, -kInf, 1.2, -0.4, 2.0};
  const Row v = {1.0, -kInf, -kInf, 0.5, 0.2};
  const KdRowResult ref = kd_row_reference(z, v, 3, 2.0, o);
  const HeaderRow<double> d = kd_row_via_headers<double>(z, v, 3, 2.0, o);
  TSKD_CHECK(std::isfinite(ref.loss), "reference loss finite");
  TSKD_CHECK_CLOSE(d.loss, ref.loss, 1e-12, "masked classes");
  for (size_t k = 0; k < z.size(); ++k) TSKD_CHECK_CLOSE(d.grad[k], ref.grad[k], 1e-12, "k=%zu", k);

  const Row z_inf = {0.3, -kInf, 1.2, -0.4, 2.0};
  const Row v_mass = {1.0, 0.1, -kInf, 0.5, 0.2};
  const HeaderRow<double> inf_row = kd_row_via_headers<double>(z_inf, v_mass, 0, 2.0, o);
  TSKD_CHECK(inf_row.loss == kInf, "student -inf where the teacher has mass: loss %g",
             inf_row.loss);
  for (double g : inf_row.grad) TSKD_CHECK(std::isfinite(g), "finite gradient, got %g", g);
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  using namespace tskd_fast::testing;
  std::mt19937 rng(1234);
  test_row_target();
  test_smoothed_target();
  test_swapped_cross_correction(rng);
  test_kl_cross_term_masks_empty_classes();
  test_loss_and_gradient(rng);
  test_gradient_vs_finite_differences(rng);
  test_masked_classes();
  std::printf("test_kd_loss_math: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
