#include "tskd_fast/fused_linear_kd_checks.h"

#include <c10/util/Exception.h>

#include <cmath>

#include "tskd_fast/checks.h"
#include "tskd_fast/fused_linear_kd_math.h"
#include "tskd_fast/logits_checks.h"

namespace tskd_fast {

void check_fused_linear_kd_rows_inputs(
    const at::Tensor& student, const std::optional<at::Tensor>& teacher,
    const std::optional<at::Tensor>& topk_ids, const std::optional<at::Tensor>& topk_logprobs,
    const std::optional<at::Tensor>& target, const at::Tensor& temperature, int64_t divergence,
    double beta, int64_t ka, double lsr_p, double ce_weight, double grad_scale) {
  const char* op = "tskd_fast::fused_linear_kd_rows";
  TORCH_CHECK(teacher.has_value() != topk_ids.has_value(), op,
              ": give either teacher logits or a top-k teacher (topk_ids and topk_logprobs)");
  TORCH_CHECK(topk_ids.has_value() == topk_logprobs.has_value(), op,
              ": topk_ids and topk_logprobs go together");
  if (teacher.has_value()) {
    check_logit_pair(student, *teacher);
  } else {
    check_logit_pair(student, student);
    const at::Tensor& ids = *topk_ids;
    const at::Tensor& lp = *topk_logprobs;
    TORCH_CHECK(ids.dim() == 2 && ids.size(0) == student.size(0), op,
                ": topk_ids must have shape (rows, K) with rows = ", student.size(0), ", got ",
                ids.sizes());
    TORCH_CHECK(ids.size(1) >= 1 && ids.size(1) <= student.size(1), op,
                ": topk_ids must list 1 <= K <= V = ", student.size(1),
                " ids per row, got K = ", ids.size(1));
    TORCH_CHECK(ids.scalar_type() == at::kLong, op, ": topk_ids must be int64, got ",
                ids.scalar_type());
    TORCH_CHECK(lp.sizes() == ids.sizes(), op, ": topk_logprobs must have the shape of topk_ids ",
                ids.sizes(), ", got ", lp.sizes());
    const auto lp_dtype = opmath_type(student.scalar_type());
    TORCH_CHECK(lp.scalar_type() == lp_dtype, op, ": topk_logprobs must be ", lp_dtype, " for ",
                student.scalar_type(), " logits, got ", lp.scalar_type());
    TORCH_CHECK(ids.device() == student.device() && lp.device() == student.device(), op,
                ": topk_ids and topk_logprobs must be on the device of the student logits (",
                student.device(), ")");
    TORCH_CHECK(ka == 0, op, ": knowledge adjustment (ka) is not defined for a top-k teacher");
  }
  TORCH_CHECK(student.stride(1) == 1 && student.stride(0) >= student.size(1), op,
              ": student logits must have unit column stride (they are overwritten in place)");
  check_target(target, student);
  TORCH_CHECK(divergence >= kForwardKl && divergence <= kTvd, op,
              ": divergence must be 0 (forward_kl) .. 5 (tvd), got ", divergence);
  if (divergence == kJsd) {
    TORCH_CHECK(beta > 0.0 && beta < 1.0, op, ": beta must be in (0, 1) for jsd, got ", beta);
  } else if (divergence == kSkewForwardKl || divergence == kSkewReverseKl) {
    TORCH_CHECK(beta >= 0.0 && beta < 1.0, op, ": beta must be in [0, 1) for a skew KL, got ",
                beta);
  }
  TORCH_CHECK(ka >= 0 && ka <= 2, op, ": ka must be 0 (none), 1 (ps) or 2 (lsr), got ", ka);
  TORCH_CHECK(target.has_value() || ka == 0, op,
              ": knowledge adjustment (ka) needs target labels, but target is None");
  TORCH_CHECK(target.has_value() || ce_weight == 0.0, op,
              ": ce_weight != 0 needs target labels, but target is None");
  TORCH_CHECK(lsr_p > 0.0 && lsr_p <= 1.0, op, ": lsr_p must be in (0, 1], got ", lsr_p);
  TORCH_CHECK(std::isfinite(ce_weight), op, ": ce_weight must be finite, got ", ce_weight);
  TORCH_CHECK(std::isfinite(grad_scale), op, ": grad_scale must be finite, got ", grad_scale);
  TORCH_CHECK(temperature.dim() == 1 && temperature.size(0) == student.size(0), op,
              ": temperature must have shape (rows,) = (", student.size(0), "), got ",
              temperature.sizes());
  const auto tdtype = opmath_type(student.scalar_type());
  TORCH_CHECK(temperature.scalar_type() == tdtype, op, ": temperature must be ", tdtype, " for ",
              student.scalar_type(), " logits, got ", temperature.scalar_type());
  TORCH_CHECK(temperature.device() == student.device(), op, ": temperature is on ",
              temperature.device(), " but the student logits are on ", student.device());
}

}  // namespace tskd_fast
