#pragma once

// Direct double-precision implementations of one row of the KD loss (docs/methods.md §1),
// written from the definitions rather than from the kernels' sums: the oracle of the C++
// tests. Rows are std::vector<double>; a label equal to ignore_index means "no label".
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

namespace tskd_fast::testing {

using Row = std::vector<double>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

struct KdOptions {
  int64_t ka = 0;  // 0 none, 1 probability shift, 2 label smoothing
  double lsr_p = 0.9;
  bool scale_tau2 = true;
  double ce_weight = 0.0;
  int64_t ignore_index = -100;
};

struct KdRowResult {
  double loss;
  Row grad;  // d loss / d z
};

// torch.argmax: the first NaN if any, else the first maximum.
// Normal values of standard deviation `spread`.
inline Row random_row(std::mt19937& rng, int64_t classes, double spread) {
  std::normal_distribution<double> normal(0.0, spread);
  Row x(classes);
  for (double& xk : x) xk = normal(rng);
  return x;
}

inline int64_t first_argmax(const Row& x) {
  int64_t best = 0;
  for (int64_t k = 1; k < static_cast<int64_t>(x.size()); ++k) {
    if (std::isnan(x[best])) break;
    if (std::isnan(x[k]) || x[k] > x[best]) best = k;
  }
  return best;
}

// The teacher after knowledge adjustment by probability shift (or unchanged), and whether the
// row's target is the label-smoothed one instead.
inline std::pair<Row, bool> adjusted_teacher(const Row& v, int64_t label, int64_t ka,
                                             int64_t ignore_index) {
  Row t = v;
  if (ka == 0 || label == ignore_index) return {t, false};
  const int64_t j = first_argmax(v);
  if (j == label) return {t, false};
  if (ka == 2) return {t, true};
  std::swap(t[j], t[label]);
  return {t, false};
}

inline KdRowResult kd_row_reference(const Row& z, const Row& v, int64_t label, double tau,
                                    const KdOptions& o) {
  const int64_t classes = static_cast<int64_t>(z.size());
  double zmax = -kInf, vmax = -kInf;
  bool nan = false;
  for (int64_t k = 0; k < classes; ++k) {
    nan = nan || std::isnan(z[k]) || std::isnan(v[k]);
    zmax = std::max(zmax, z[k]);
    vmax = std::max(vmax, v[k]);
  }
  if (nan || !std::isfinite(zmax) || !std::isfinite(vmax)) return {kNaN, Row(classes, kNaN)};

  const bool label_used = label != o.ignore_index;
  const auto [t, smoothed] = adjusted_teacher(v, label, o.ka, o.ignore_index);
  Row q(classes);
  if (smoothed) {
    const double off = classes > 1 ? (1.0 - o.lsr_p) / double(classes - 1) : 0.0;
    for (int64_t k = 0; k < classes; ++k) q[k] = k == label ? o.lsr_p : off;
  } else {
    double sum = 0.0;
    for (int64_t k = 0; k < classes; ++k) sum += q[k] = std::exp((t[k] - vmax) / tau);
    for (double& qk : q) qk /= sum;
  }
  double sum_p = 0.0;
  for (int64_t k = 0; k < classes; ++k) sum_p += std::exp((z[k] - zmax) / tau);
  const double scale = o.scale_tau2 ? tau * tau : 1.0;
  KdRowResult out{0.0, Row(classes)};
  for (int64_t k = 0; k < classes; ++k) {
    const double log_p = (z[k] - zmax) / tau - std::log(sum_p);
    if (q[k] > 0.0) out.loss += scale * q[k] * (std::log(q[k]) - log_p);
    out.grad[k] = scale / tau * (std::exp(log_p) - q[k]);
  }
  if (label_used && o.ce_weight != 0.0) {
    double sum_1 = 0.0;
    for (int64_t k = 0; k < classes; ++k) sum_1 += std::exp(z[k] - zmax);
    const double lse = std::log(sum_1);
    out.loss += o.ce_weight * (lse - (z[label] - zmax));
    for (int64_t k = 0; k < classes; ++k) {
      out.grad[k] += o.ce_weight * (std::exp(z[k] - zmax - lse) - (k == label ? 1.0 : 0.0));
    }
  }
  return out;
}

}  // namespace tskd_fast::testing
