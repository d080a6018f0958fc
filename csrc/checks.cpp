#include "tskd_fast/checks.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace tskd_fast {

at::ScalarType opmath_type(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor with_unit_class_stride(const at::Tensor& logits) {
  if (logits.stride(1) == 1 && logits.stride(0) >= logits.size(1)) return logits;
  return logits.contiguous();
}

KernelLogits kernel_logits(const at::Tensor& student, const at::Tensor& teacher,
                           const std::optional<at::Tensor>& target) {
  KernelLogits out{with_unit_class_stride(student), with_unit_class_stride(teacher), std::nullopt};
  if (target.has_value()) out.target = target->contiguous();
  return out;
}

void check_labels_on_host(const at::Tensor& target, int64_t classes, int64_t ignore_index,
                          const char* op) {
  const at::Tensor labels = target.contiguous();
  const int64_t* y = labels.data_ptr<int64_t>();
  for (int64_t n = 0; n < labels.numel(); ++n) {
    TORCH_CHECK(y[n] == ignore_index || (y[n] >= 0 && y[n] < classes), op, ": target[", n,
                "] = ", y[n], " is out of range: labels must be in [0, ", classes,
                ") or equal ignore_index (", ignore_index, ")");
  }
}

void check_logit_pair(const at::Tensor& student, const at::Tensor& teacher, const char* op) {
  TORCH_CHECK(student.dim() == 2, op, ": student_logits must be 2-D (batch, classes), got ",
              student.dim(), "-D with shape ", student.sizes());
  TORCH_CHECK(teacher.sizes() == student.sizes(), op,
              ": teacher_logits must have the shape of student_logits ", student.sizes(), ", got ",
              teacher.sizes());
  TORCH_CHECK(student.size(0) > 0, op, ": empty batch (student_logits has 0 rows)");
  TORCH_CHECK(student.size(1) > 0, op, ": student_logits has 0 classes");
  const auto dtype = student.scalar_type();
  TORCH_CHECK(
      dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
      op, ": student_logits must be float32, float16, bfloat16 or float64, got ", dtype);
  TORCH_CHECK(teacher.scalar_type() == dtype, op, ": teacher_logits must have the dtype of ",
              "student_logits (", dtype, "), got ", teacher.scalar_type());
  TORCH_CHECK(teacher.device() == student.device(), op, ": teacher_logits is on ", teacher.device(),
              " but student_logits is on ", student.device());
  TORCH_CHECK(dtype != at::kDouble || student.device().is_cpu(), op,
              ": float64 logits are supported on the CPU only");
}

void check_target(const std::optional<at::Tensor>& target, const at::Tensor& student,
                  const char* op) {
  if (!target.has_value()) return;
  const at::Tensor& t = *target;
  TORCH_CHECK(t.dim() == 1 && t.size(0) == student.size(0), op,
              ": target must have shape (batch,) = (", student.size(0), "), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": target must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.device() == student.device(), op, ": target is on ", t.device(),
              " but student_logits is on ", student.device());
}

void check_kd_loss_inputs(const at::Tensor& student, const at::Tensor& teacher,
                          const std::optional<at::Tensor>& target, const at::Tensor& temperature,
                          int64_t ka, double lsr_p, double ce_weight, double grad_scale) {
  const char* op = "tskd_fast::kd_loss";
  check_logit_pair(student, teacher, op);
  check_target(target, student, op);
  TORCH_CHECK(ka >= 0 && ka <= 2, op, ": ka must be 0 (none), 1 (ps) or 2 (lsr), got ", ka);
  TORCH_CHECK(target.has_value() || ka == 0, op,
              ": knowledge adjustment (ka) needs target labels, but target is None");
  TORCH_CHECK(target.has_value() || ce_weight == 0.0, op,
              ": ce_weight != 0 needs target labels, but target is None");
  TORCH_CHECK(lsr_p > 0.0 && lsr_p <= 1.0, op, ": lsr_p must be in (0, 1], got ", lsr_p);
  TORCH_CHECK(std::isfinite(ce_weight), op, ": ce_weight must be finite, got ", ce_weight);
  TORCH_CHECK(std::isfinite(grad_scale), op, ": grad_scale must be finite, got ", grad_scale);
  TORCH_CHECK(temperature.dim() == 1 && temperature.size(0) == student.size(0), op,
              ": temperature must have shape (batch,) = (", student.size(0), "), got ",
              temperature.sizes());
  const auto tdtype = opmath_type(student.scalar_type());
  TORCH_CHECK(temperature.scalar_type() == tdtype, op, ": temperature must be ", tdtype, " for ",
              student.scalar_type(), " logits, got ", temperature.scalar_type());
  TORCH_CHECK(temperature.device() == student.device(), op, ": temperature is on ",
              temperature.device(), " but student_logits is on ", student.device());
}

void check_dtd_weight_inputs(const at::Tensor& student, const at::Tensor& teacher,
                             const std::optional<at::Tensor>& target, int64_t mode, double gamma,
                             int64_t ka) {
  const char* op = "tskd_fast::dtd_weight";
  check_logit_pair(student, teacher, op);
  check_target(target, student, op);
  TORCH_CHECK(mode == 0 || mode == 1, op, ": mode must be 0 (flsw) or 1 (cwsm), got ", mode);
  TORCH_CHECK(ka >= 0 && ka <= 2, op, ": ka must be 0 (none), 1 (ps) or 2 (lsr), got ", ka);
  TORCH_CHECK(target.has_value() || ka == 0, op,
              ": knowledge adjustment (ka) needs target labels, but target is None");
  TORCH_CHECK(std::isfinite(gamma) && gamma >= 0.0, op, ": gamma must be finite and >= 0, got ",
              gamma);
}

}  // namespace tskd_fast
