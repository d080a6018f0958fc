// tskd_fast::dtd_weight and tskd_fast::dtd_temperature on the CPU: checks, the kernel of the
// vector ISA the machine runs, then (dtd_temperature) the temperatures from the weights.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/dtd_args.h"
#include "cpu/isa_dispatch.h"
#include "tskd_fast/checks.h"
#include "tskd_fast/dtd_checks.h"
#include "tskd_fast/logits_checks.h"

namespace tskd_fast::cpu {
namespace {

// The kernel on checked inputs.
at::Tensor weights(const at::Tensor& student_in, const at::Tensor& teacher_in,
                   const std::optional<at::Tensor>& target_in, int64_t mode, double gamma,
                   int64_t ka, int64_t ignore_index) {
  const auto [student, teacher, target] = kernel_logits(student_in, teacher_in, target_in);
  const int64_t rows = student.size(0), classes = student.size(1);
  if (target.has_value() && ka != 0) check_labels_on_host(*target, classes, ignore_index);
  at::Tensor weight =
      at::empty({rows}, student.options().dtype(opmath_type(student.scalar_type())));
  DtdWeightArgs args{};
  args.student = student.data_ptr();
  args.teacher = teacher.data_ptr();
  args.student_row_stride = student.stride(0);
  args.teacher_row_stride = teacher.stride(0);
  args.target = target.has_value() ? target->data_ptr<int64_t>() : nullptr;
  args.weight = weight.data_ptr();
  args.rows = rows;
  args.classes = classes;
  args.mode = mode;
  args.gamma = gamma;
  args.ka = ka;
  args.ignore_index = ignore_index;
  args.dtype = student.scalar_type();
  TSKD_FAST_CALL_ISA(dtd_weight_kernel, args);
  return weight;
}

at::Tensor dtd_weight_cpu(const at::Tensor& student, const at::Tensor& teacher,
                          const std::optional<at::Tensor>& target, int64_t mode, double gamma,
                          int64_t ka, int64_t ignore_index) {
  check_dtd_weight_inputs(student, teacher, target, mode, gamma, ka);
  return weights(student, teacher, target, mode, gamma, ka, ignore_index);
}

at::Tensor dtd_temperature_cpu(const at::Tensor& student, const at::Tensor& teacher,
                               const std::optional<at::Tensor>& target, int64_t mode, double gamma,
                               int64_t ka, int64_t ignore_index, double t0, double beta,
                               double min_temperature) {
  check_dtd_temperature_inputs(student, teacher, target, mode, gamma, ka, t0, beta,
                               min_temperature);
  return temperatures_from_weights(weights(student, teacher, target, mode, gamma, ka, ignore_index),
                                   t0, beta, min_temperature);
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CPU, m) {
  m.impl("dtd_weight", &dtd_weight_cpu);
  m.impl("dtd_temperature", &dtd_temperature_cpu);
}

}  // namespace tskd_fast::cpu
