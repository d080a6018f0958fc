#include <c10/util/Exception.h>

#include "tskd_fast/checks.h"
#include "tskd_fast/logits_checks.h"

namespace tskd_fast {

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

void check_labels_on_host(const at::Tensor& target, int64_t classes, int64_t ignore_index) {
  const at::Tensor labels = target.contiguous();
  const int64_t* y = labels.data_ptr<int64_t>();
  for (int64_t n = 0; n < labels.numel(); ++n) {
    TORCH_CHECK_VALUE(y[n] == ignore_index || (y[n] >= 0 && y[n] < classes), "target[", n,
                      "] = ", y[n], " is out of range: labels must be in [0, ", classes,
                      ") or equal ignore_index (", ignore_index, ")");
  }
}

void check_logit_pair(const at::Tensor& student, const at::Tensor& teacher) {
  TORCH_CHECK_VALUE(student.dim() == 2, "student_logits must be 2-D (batch, classes), got shape ",
                    py_shape(student.sizes()));
  TORCH_CHECK_VALUE(teacher.sizes() == student.sizes(),
                    "teacher_logits must have the shape of student_logits ",
                    py_shape(student.sizes()), ", got ", py_shape(teacher.sizes()));
  TORCH_CHECK_VALUE(student.size(0) > 0, "student_logits is an empty batch (0 rows)");
  TORCH_CHECK_VALUE(student.size(1) > 0, "student_logits has 0 classes");
  const auto dtype = student.scalar_type();
  TORCH_CHECK_VALUE(is_kernel_dtype(dtype),
                    "student_logits must be float32, float16, bfloat16 or float64, got ",
                    py_dtype(dtype));
  TORCH_CHECK_VALUE(teacher.scalar_type() == dtype,
                    "teacher_logits must have the dtype of student_logits (", py_dtype(dtype),
                    "), got ", py_dtype(teacher.scalar_type()));
  TORCH_CHECK_VALUE(teacher.device() == student.device(), "teacher_logits is on ", teacher.device(),
                    " but student_logits is on ", student.device());
  TORCH_CHECK_VALUE(dtype != at::kDouble || student.device().is_cpu(),
                    "float64 logits are supported on the CPU only");
}

void check_target(const std::optional<at::Tensor>& target, const at::Tensor& student) {
  if (!target.has_value()) return;
  const at::Tensor& t = *target;
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == student.size(0),
                    "target must have shape (batch,) = (", student.size(0), ",), got ",
                    py_shape(t.sizes()));
  TORCH_CHECK_VALUE(t.scalar_type() == at::kLong, "target must be torch.int64, got ",
                    py_dtype(t.scalar_type()));
  TORCH_CHECK_VALUE(t.device() == student.device(), "target is on ", t.device(),
                    " but student_logits is on ", student.device());
}

void check_ka(int64_t ka, const std::optional<at::Tensor>& target) {
  TORCH_CHECK_VALUE(ka >= 0 && ka <= 2, "ka must be 0 (none), 1 (ps) or 2 (lsr), got ", ka);
  TORCH_CHECK_VALUE(target.has_value() || ka == 0, "ka=", ka, ka == 1 ? " (ps)" : " (lsr)",
                    " needs target labels, but target is None");
}

}  // namespace tskd_fast
