// tskd_fast::kd_loss on the CPU: checks, value checks that need the data, then the kernel of the
// vector ISA the machine runs.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "cpu/isa_dispatch.h"
#include "cpu/output_pool.h"
#include "tskd_fast/checks.h"

namespace tskd_fast::cpu {
namespace {

template <typename T>
void check_temperature(const at::Tensor& temperature) {
  const T* t = temperature.data_ptr<T>();
  for (int64_t n = 0; n < temperature.numel(); ++n) {
    TORCH_CHECK(t[n] > T(0) && std::isfinite(t[n]), "tskd_fast::kd_loss: temperature[", n,
                "] = ", t[n], " must be finite and > 0");
  }
}

std::tuple<at::Tensor, at::Tensor> kd_loss_cpu(const at::Tensor& student_in,
                                               const at::Tensor& teacher_in,
                                               const std::optional<at::Tensor>& target_in,
                                               const at::Tensor& temperature_in, int64_t ka,
                                               double lsr_p, bool scale_tau2, double ce_weight,
                                               int64_t ignore_index, bool compute_grad,
                                               double grad_scale) {
  check_kd_loss_inputs(student_in, teacher_in, target_in, temperature_in, ka, lsr_p, ce_weight,
                       grad_scale);
  const auto [student, teacher, target] = kernel_logits(student_in, teacher_in, target_in);
  const at::Tensor temperature = temperature_in.contiguous();
  const int64_t rows = student.size(0), classes = student.size(1);
  if (target.has_value())
    check_labels_on_host(*target, classes, ignore_index, "tskd_fast::kd_loss");
  if (temperature.scalar_type() == at::kDouble) {
    check_temperature<double>(temperature);
  } else {
    check_temperature<float>(temperature);
  }

  at::Tensor row_loss = at::empty({rows}, temperature.options());
  at::Tensor row_grad = compute_grad ? empty_output({rows, classes}, student.options())
                                     : at::empty({0}, student.options());
  KdLossArgs args{};
  args.student = student.data_ptr();
  args.teacher = teacher.data_ptr();
  args.student_row_stride = student.stride(0);
  args.teacher_row_stride = teacher.stride(0);
  args.target = target.has_value() ? target->data_ptr<int64_t>() : nullptr;
  args.temperature = temperature.data_ptr();
  args.row_loss = row_loss.data_ptr();
  args.row_grad = compute_grad ? row_grad.data_ptr() : nullptr;
  args.rows = rows;
  args.classes = classes;
  args.ka = ka;
  args.lsr_p = lsr_p;
  args.scale_tau2 = scale_tau2;
  args.ce_weight = ce_weight;
  args.ignore_index = ignore_index;
  args.grad_scale = grad_scale;
  args.dtype = student.scalar_type();
  TSKD_FAST_CALL_ISA(kd_loss_kernel, args);
  return {row_loss, row_grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CPU, m) { m.impl("kd_loss", &kd_loss_cpu); }

}  // namespace tskd_fast::cpu
