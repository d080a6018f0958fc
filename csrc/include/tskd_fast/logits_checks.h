#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

// The checks and kernel views of a (student, teacher) pair of logit rows with optional labels,
// shared by the ops over logits (kd_loss, dtd_weight, dtd_temperature) on the CPU and CUDA.
namespace tskd_fast {

// student/teacher: (B, C) logits of one kernel dtype (float64 on the CPU only) on one device;
// target: absent or (B,) int64 on that device.
void check_logit_pair(const at::Tensor& student, const at::Tensor& teacher);
void check_target(const std::optional<at::Tensor>& target, const at::Tensor& student);
// ka: 0 none, 1 probability shift, 2 label smoothing; any but 0 needs the labels.
void check_ka(int64_t ka, const std::optional<at::Tensor>& target);

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
void check_labels_on_host(const at::Tensor& target, int64_t classes, int64_t ignore_index);

}  // namespace tskd_fast
