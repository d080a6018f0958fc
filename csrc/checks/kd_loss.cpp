#include <c10/util/Exception.h>

#include <cmath>

#include "tskd_fast/checks.h"
#include "tskd_fast/kd_loss_checks.h"
#include "tskd_fast/logits_checks.h"

namespace tskd_fast {

void check_kd_loss_inputs(const at::Tensor& student, const at::Tensor& teacher,
                          const std::optional<at::Tensor>& target, const at::Tensor& temperature,
                          int64_t ka, double lsr_p, double ce_weight, double grad_scale,
                          int64_t reduction) {
  check_logit_pair(student, teacher);
  check_target(target, student);
  check_ka(ka, target);
  TORCH_CHECK_VALUE(target.has_value() || ce_weight == 0.0,
                    "ce_weight != 0 needs target labels, but target is None");
  TORCH_CHECK_VALUE(lsr_p > 0.0 && lsr_p <= 1.0, "lsr_p must be in (0, 1], got ", lsr_p);
  TORCH_CHECK_VALUE(std::isfinite(ce_weight), "ce_weight must be finite, got ", ce_weight);
  TORCH_CHECK_VALUE(std::isfinite(grad_scale), "grad_scale must be finite, got ", grad_scale);
  TORCH_CHECK_VALUE(reduction >= kKdReduceNone && reduction <= kKdReduceMean,
                    "reduction must be 0 (none), 1 (sum) or 2 (mean), got ", reduction);
  TORCH_CHECK_VALUE(temperature.dim() == 1 && temperature.size(0) == student.size(0),
                    "temperature must have shape (batch,) = (", student.size(0), ",), got ",
                    py_shape(temperature.sizes()));
  const auto tdtype = opmath_type(student.scalar_type());
  TORCH_CHECK_VALUE(temperature.scalar_type() == tdtype, "temperature must be ", py_dtype(tdtype),
                    " for ", py_dtype(student.scalar_type()), " logits, got ",
                    py_dtype(temperature.scalar_type()));
  TORCH_CHECK_VALUE(temperature.device() == student.device(), "temperature is on ",
                    temperature.device(), " but student_logits is on ", student.device());
}

namespace {

template <typename T>
void check_temperature_values(const at::Tensor& temperature) {
  const T* t = temperature.const_data_ptr<T>();
  const int64_t stride = temperature.stride(0);
  for (int64_t n = 0; n < temperature.size(0); ++n) {
    const T value = t[n * stride];
    TORCH_CHECK_VALUE(value > T(0) && std::isfinite(value),
                      "temperature must be finite and > 0, got temperature[", n, "] = ", value);
  }
}

}  // namespace

void check_temperatures_on_host(const at::Tensor& temperature) {
  if (temperature.scalar_type() == at::kDouble) {
    check_temperature_values<double>(temperature);
  } else {
    check_temperature_values<float>(temperature);
  }
}

}  // namespace tskd_fast
