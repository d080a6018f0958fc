#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "tskd_fast/checks.h"
#include "tskd_fast/fused_linear_kd_checks.h"
#include "tskd_fast/fused_linear_kd_math.h"
#include "tskd_fast/logits_checks.h"

namespace tskd_fast {

void check_fused_linear_kd_rows_inputs(
    const at::Tensor& student, const std::optional<at::Tensor>& teacher,
    const std::optional<at::Tensor>& topk_ids, const std::optional<at::Tensor>& topk_logprobs,
    const std::optional<at::Tensor>& target, const at::Tensor& temperature, int64_t divergence,
    double beta, int64_t ka, double lsr_p, double ce_weight, double grad_scale) {
  TORCH_CHECK_VALUE(teacher.has_value() != topk_ids.has_value(),
                    "give either teacher logits or a top-k teacher (topk_ids and topk_logprobs), "
                    "not both or neither");
  TORCH_CHECK_VALUE(topk_ids.has_value() == topk_logprobs.has_value(),
                    "topk_ids and topk_logprobs go together");
  // Without teacher logits the student's are checked as a pair with themselves: the same words.
  check_logit_pair(student, teacher.has_value() ? *teacher : student);
  TORCH_CHECK_VALUE(student.stride(1) == 1 && student.stride(0) >= student.size(1),
                    "student_logits must have unit stride along classes (the gradient is written "
                    "over them), got strides ",
                    py_shape(student.strides()));
  const int64_t rows = student.size(0), classes = student.size(1);
  if (topk_ids.has_value()) {
    const at::Tensor& ids = *topk_ids;
    const at::Tensor& lp = *topk_logprobs;
    TORCH_CHECK_VALUE(ids.dim() == 2 && ids.size(0) == rows,
                      "topk_ids must have shape (rows, K) with rows = ", rows, ", got ",
                      py_shape(ids.sizes()));
    TORCH_CHECK_VALUE(ids.size(1) >= 1 && ids.size(1) <= classes,
                      "topk_ids must list 1 <= K <= ", classes,
                      " ids per row, got K = ", ids.size(1));
    check_dtype_and_device(ids, "topk_ids", student, "student_logits", at::kLong);
    TORCH_CHECK_VALUE(lp.sizes() == ids.sizes(), "topk_logprobs must have the shape of topk_ids ",
                      py_shape(ids.sizes()), ", got ", py_shape(lp.sizes()));
    check_dtype_and_device(lp, "topk_logprobs", student, "student_logits",
                           opmath_type(student.scalar_type()));
    TORCH_CHECK_VALUE(ka == 0, "ka must be 0 (none) with a top-k teacher, got ", ka,
                      ": knowledge adjustment needs the teacher's logits");
  }
  check_target(target, student);
  TORCH_CHECK_VALUE(divergence >= kForwardKl && divergence <= kTvd,
                    "divergence must be 0 (forward_kl) to 5 (tvd), got ", divergence);
  if (divergence == kJsd) {
    TORCH_CHECK_VALUE(beta > 0.0 && beta < 1.0, "beta must be in (0, 1) for jsd, got ", beta);
  } else if (divergence == kSkewForwardKl || divergence == kSkewReverseKl) {
    TORCH_CHECK_VALUE(beta >= 0.0 && beta < 1.0, "beta must be in [0, 1) for a skew KL, got ",
                      beta);
  }
  check_ka(ka, target);
  TORCH_CHECK_VALUE(target.has_value() || ce_weight == 0.0,
                    "ce_weight != 0 needs target labels, but target is None");
  TORCH_CHECK_VALUE(lsr_p > 0.0 && lsr_p <= 1.0, "lsr_p must be in (0, 1], got ", lsr_p);
  TORCH_CHECK_VALUE(std::isfinite(ce_weight), "ce_weight must be finite, got ", ce_weight);
  TORCH_CHECK_VALUE(std::isfinite(grad_scale), "grad_scale must be finite, got ", grad_scale);
  TORCH_CHECK_VALUE(temperature.dim() == 1 && temperature.size(0) == rows,
                    "temperature must have shape (batch,) = (", rows, ",), got ",
                    py_shape(temperature.sizes()));
  const auto tdtype = opmath_type(student.scalar_type());
  TORCH_CHECK_VALUE(temperature.scalar_type() == tdtype, "temperature must be ", py_dtype(tdtype),
                    " for ", py_dtype(student.scalar_type()), " logits, got ",
                    py_dtype(temperature.scalar_type()));
  TORCH_CHECK_VALUE(temperature.device() == student.device(), "temperature is on ",
                    temperature.device(), " but student_logits is on ", student.device());
}

void check_topk_ids_on_host(const at::Tensor& topk_ids, int64_t classes) {
  const at::Tensor ids = topk_ids.contiguous();
  const int64_t rows = ids.size(0), k = ids.size(1);
  const int64_t* id = ids.const_data_ptr<int64_t>();
  for (int64_t n = 0; n < rows; ++n) {
    for (int64_t i = 0; i < k; ++i) {
      const int64_t value = id[n * k + i];
      TORCH_CHECK_VALUE(value >= 0 && value < classes, "topk_ids[", n, ", ", i, "] = ", value,
                        " is out of range [0, ", classes, ")");
    }
  }
  std::vector<int64_t> sorted(static_cast<size_t>(k));
  for (int64_t n = 0; n < rows; ++n) {
    std::copy(id + n * k, id + (n + 1) * k, sorted.begin());
    std::sort(sorted.begin(), sorted.end());
    const auto twice = std::adjacent_find(sorted.begin(), sorted.end());
    TORCH_CHECK_VALUE(twice == sorted.end(), "topk_ids row ", n, " lists id ", *twice, " twice");
  }
}

}  // namespace tskd_fast
