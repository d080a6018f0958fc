#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

// Input checks of tskd_fast::fused_linear_kd_rows, shared by its CPU and CUDA implementations (the
// Python twin, with the same words: tskd_fast/ops/fused_linear_kd_checks.py).
namespace tskd_fast {

// student (R, V) logits with unit stride along classes (the gradient is written over them); either
// teacher logits of the same shape, dtype and device, or a top-k teacher: ids (R, K) int64 with
// 1 <= K <= V and log-probabilities (R, K) of the opmath type, on the logits' device, with ka = 0;
// target absent or (R,) int64; divergence 0..5 with beta in its range; ka 0..2; lsr_p in (0, 1];
// finite ce_weight and grad_scale; temperature (R,) of the opmath type on the logits' device.
// Value checks that need the data are done by each device's op (the CPU's: check_labels_on_host,
// check_temperatures_on_host of logits_checks.h and the one below).
void check_fused_linear_kd_rows_inputs(
    const at::Tensor& student, const std::optional<at::Tensor>& teacher,
    const std::optional<at::Tensor>& topk_ids, const std::optional<at::Tensor>& topk_logprobs,
    const std::optional<at::Tensor>& target, const at::Tensor& temperature, int64_t divergence,
    double beta, int64_t ka, double lsr_p, double ce_weight, double grad_scale);

// Every top-k id in [0, classes) and no id twice in a row, read on the host (CPU tensors).
void check_topk_ids_on_host(const at::Tensor& topk_ids, int64_t classes);

}  // namespace tskd_fast
