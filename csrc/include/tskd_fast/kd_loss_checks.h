#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

// Input checks of tskd_fast::kd_loss, shared by the CPU and CUDA implementations (the Python
// twin: tskd_fast/ops/kd_loss.py).
namespace tskd_fast {

// The reduction argument of kd_loss over the per-row losses.
enum KdReduction : int64_t { kKdReduceNone = 0, kKdReduceSum = 1, kKdReduceMean = 2 };

// student/teacher (B, C) logits, target absent or (B,) int64, temperature (B,) of the opmath type
// on the logits' device; ka, lsr_p, ce_weight, grad_scale and reduction in range. Value checks
// that need the data (labels in range, temperature > 0) are done by the kernels of each device.
void check_kd_loss_inputs(const at::Tensor& student, const at::Tensor& teacher,
                          const std::optional<at::Tensor>& target, const at::Tensor& temperature,
                          int64_t ka, double lsr_p, double ce_weight, double grad_scale,
                          int64_t reduction);

// Every temperature finite and > 0, read on the host (CPU tensors).
void check_temperatures_on_host(const at::Tensor& temperature);

}  // namespace tskd_fast
