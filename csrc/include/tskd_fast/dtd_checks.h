#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

// Input checks of tskd_fast::dtd_weight and tskd_fast::dtd_temperature, shared by the CPU and
// CUDA implementations (the Python twin: tskd_fast/ops/dtd.py), and the temperatures of DTD from
// its weights.
namespace tskd_fast {

// student/teacher (B, C) logits, target absent or (B,) int64; mode 0 (flsw) or 1 (cwsm); gamma
// finite and >= 0; ka in range (any but 0 needs the labels).
void check_dtd_weight_inputs(const at::Tensor& student, const at::Tensor& teacher,
                             const std::optional<at::Tensor>& target, int64_t mode, double gamma,
                             int64_t ka);
// The same, and t0 finite and > 0, beta finite, min_temperature > 0.
void check_dtd_temperature_inputs(const at::Tensor& student, const at::Tensor& teacher,
                                  const std::optional<at::Tensor>& target, int64_t mode,
                                  double gamma, int64_t ka, double t0, double beta,
                                  double min_temperature);

// tau_n = max(t0 + beta (mean(w) - w_n), min_temperature), the mean over the finite weights; a row
// whose weight is not finite gets t0 (tskd_fast.reference.dtd.temperatures_from_weights). On the
// host for CPU weights, in device ops (no sync) otherwise.
at::Tensor temperatures_from_weights(const at::Tensor& weight, double t0, double beta,
                                     double min_temperature);

}  // namespace tskd_fast
