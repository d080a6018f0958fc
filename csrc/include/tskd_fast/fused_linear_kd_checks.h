#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

// Input checks of the fused linear + KD row op (tskd_fast::fused_linear_kd_rows), shared by its
// CPU and CUDA implementations so that both reject the same inputs with the same messages.
namespace tskd_fast {

// student (R, V) floating logits; teacher (R, V) of the same dtype and device, or top-k ids
// (R, K) int64 with logprobs (R, K) of the opmath type, 1 <= K <= V; target (R,) int64 or none;
// temperature (R,) of the opmath type; divergence 0..5 with beta in its range; ka 0..2 (0 with
// a top-k teacher); lsr_p in (0, 1]; finite ce_weight and grad_scale. Value checks that need the
// data (labels and ids in range, temperature > 0) are done by each device's kernel.
void check_fused_linear_kd_rows_inputs(
    const at::Tensor& student, const std::optional<at::Tensor>& teacher,
    const std::optional<at::Tensor>& topk_ids, const std::optional<at::Tensor>& topk_logprobs,
    const std::optional<at::Tensor>& target, const at::Tensor& temperature, int64_t divergence,
    double beta, int64_t ka, double lsr_p, double ce_weight, double grad_scale);

}  // namespace tskd_fast
