#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "tskd_fast/dtd_checks.h"
#include "tskd_fast/logits_checks.h"

namespace tskd_fast {

void check_dtd_weight_inputs(const at::Tensor& student, const at::Tensor& teacher,
                             const std::optional<at::Tensor>& target, int64_t mode, double gamma,
                             int64_t ka) {
  check_logit_pair(student, teacher);
  check_target(target, student);
  TORCH_CHECK_VALUE(mode == 0 || mode == 1, "mode must be 0 (flsw) or 1 (cwsm), got ", mode);
  check_ka(ka, target);
  TORCH_CHECK_VALUE(std::isfinite(gamma) && gamma >= 0.0, "gamma must be finite and >= 0, got ",
                    gamma);
}

void check_dtd_temperature_inputs(const at::Tensor& student, const at::Tensor& teacher,
                                  const std::optional<at::Tensor>& target, int64_t mode,
                                  double gamma, int64_t ka, double t0, double beta,
                                  double min_temperature) {
  check_dtd_weight_inputs(student, teacher, target, mode, gamma, ka);
  TORCH_CHECK_VALUE(std::isfinite(t0) && t0 > 0.0, "t0 must be finite and > 0, got ", t0);
  TORCH_CHECK_VALUE(std::isfinite(beta), "beta must be finite, got ", beta);
  TORCH_CHECK_VALUE(min_temperature > 0.0, "min_temperature must be > 0, got ", min_temperature);
}

namespace {

template <typename T>
void temperatures_on_host(const at::Tensor& weight, double t0, double beta, double min_temperature,
                          at::Tensor& tau) {
  const T* w = weight.const_data_ptr<T>();
  T* out = tau.mutable_data_ptr<T>();
  const int64_t rows = weight.numel();
  double sum = 0;
  int64_t finite = 0;
  for (int64_t n = 0; n < rows; ++n) {
    if (std::isfinite(w[n])) {
      sum += static_cast<double>(w[n]);
      ++finite;
    }
  }
  const double mean = sum / static_cast<double>(finite > 0 ? finite : 1);
  for (int64_t n = 0; n < rows; ++n) {
    const double t = std::isfinite(w[n]) ? t0 + beta * (mean - static_cast<double>(w[n])) : t0;
    out[n] = static_cast<T>(t > min_temperature ? t : min_temperature);
  }
}

}  // namespace

at::Tensor temperatures_from_weights(const at::Tensor& weight, double t0, double beta,
                                     double min_temperature) {
  if (weight.device().is_cpu()) {
    at::Tensor tau = at::empty_like(weight);
    if (weight.scalar_type() == at::kDouble) {
      temperatures_on_host<double>(weight, t0, beta, min_temperature, tau);
    } else {
      temperatures_on_host<float>(weight, t0, beta, min_temperature, tau);
    }
    return tau;
  }
  const at::Tensor finite = at::isfinite(weight);
  const at::Tensor count = finite.sum().clamp_min(1).to(weight.scalar_type());
  const at::Tensor mean = at::where(finite, weight, 0.0).sum() / count;
  const at::Tensor tau = at::where(finite, (mean - weight) * beta + t0, t0);
  return tau.clamp_min(min_temperature);
}

}  // namespace tskd_fast
