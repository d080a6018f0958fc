// tskd_fast::dtd_weight on the CPU.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/isa_dispatch.h"
#include "tskd_fast/checks.h"

namespace tskd_fast::cpu {
namespace {

at::Tensor dtd_weight_cpu(const at::Tensor& student_in, const at::Tensor& teacher_in,
                          const std::optional<at::Tensor>& target_in, int64_t mode, double gamma,
                          int64_t ka, int64_t ignore_index) {
  check_dtd_weight_inputs(student_in, teacher_in, target_in, mode, gamma, ka);
  const at::Tensor student = with_unit_class_stride(student_in);
  const at::Tensor teacher = with_unit_class_stride(teacher_in);
  std::optional<at::Tensor> target;
  if (target_in.has_value()) target = target_in->contiguous();
  const int64_t rows = student.size(0), classes = student.size(1);
  if (target.has_value() && ka != 0) {
    const int64_t* y = target->data_ptr<int64_t>();
    for (int64_t n = 0; n < rows; ++n) {
      TORCH_CHECK(y[n] == ignore_index || (y[n] >= 0 && y[n] < classes),
                  "tskd_fast::dtd_weight: target[", n, "] = ", y[n],
                  " is out of range: labels must be in [0, ", classes, ") or equal ignore_index (",
                  ignore_index, ")");
    }
  }
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

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CPU, m) { m.impl("dtd_weight", &dtd_weight_cpu); }

}  // namespace tskd_fast::cpu
