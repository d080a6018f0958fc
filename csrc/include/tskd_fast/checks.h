#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

// Input checks at the op boundary, shared by the CPU and CUDA implementations so that every
// backend rejects the same inputs with the same messages.
namespace tskd_fast {

// student/teacher: (B, C) floating logits on one device, same dtype; target: optional (B,) int64;
// temperature: (B,) float32 (float64 for float64 logits). Value checks that need the data
// (labels in range, temperature > 0) are done by the kernels of each device.
void check_logit_pair(const at::Tensor& student, const at::Tensor& teacher, const char* op);
void check_target(const std::optional<at::Tensor>& target, const at::Tensor& student,
                  const char* op);
void check_kd_loss_inputs(const at::Tensor& student, const at::Tensor& teacher,
                          const std::optional<at::Tensor>& target, const at::Tensor& temperature,
                          int64_t ka, double lsr_p, double ce_weight, double grad_scale);
void check_dtd_weight_inputs(const at::Tensor& student, const at::Tensor& teacher,
                             const std::optional<at::Tensor>& target, int64_t mode, double gamma,
                             int64_t ka);

// The float type the kernels compute in for logits of dtype `dtype`.
at::ScalarType opmath_type(at::ScalarType dtype);

// Row-major view with unit stride along classes; copies only when the classes are strided.
at::Tensor with_unit_class_stride(const at::Tensor& logits);

// The checked inputs as the kernels read them: logits with unit class stride (rows may be
// strided), the target contiguous.
struct KernelLogits {
  at::Tensor student;
  at::Tensor teacher;
  std::optional<at::Tensor> target;
};
KernelLogits kernel_logits(const at::Tensor& student, const at::Tensor& teacher,
                           const std::optional<at::Tensor>& target);

// Labels in [0, classes) or ignore_index, read on the host: for CPU targets (CUDA kernels assert
// on the device instead of synchronising).
void check_labels_on_host(const at::Tensor& target, int64_t classes, int64_t ignore_index,
                          const char* op);

}  // namespace tskd_fast
