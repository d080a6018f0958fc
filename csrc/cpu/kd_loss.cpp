// tskd_fast::kd_loss on the CPU: checks, value checks that need the data, the kernel of the
// vector ISA the machine runs, then the reduction of the per-row losses.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "cpu/isa_dispatch.h"
#include "cpu/kd_loss_args.h"
#include "cpu/output_pool.h"
#include "tskd_fast/checks.h"
#include "tskd_fast/kd_loss_checks.h"
#include "tskd_fast/logits_checks.h"

namespace tskd_fast::cpu {
namespace {

// The per-row losses summed in double, in row order; divided by the rows for the mean.
template <typename T>
void reduce_rows(const std::vector<T>& rows, int64_t reduction, at::Tensor& loss) {
  double total = 0;
  for (const T value : rows) total += static_cast<double>(value);
  if (reduction == kKdReduceMean) total /= static_cast<double>(rows.size());
  *loss.mutable_data_ptr<T>() = static_cast<T>(total);
}

std::tuple<at::Tensor, at::Tensor> kd_loss_cpu(const at::Tensor& student_in,
                                               const at::Tensor& teacher_in,
                                               const std::optional<at::Tensor>& target_in,
                                               const at::Tensor& temperature_in, int64_t ka,
                                               double lsr_p, bool scale_tau2, double ce_weight,
                                               int64_t ignore_index, bool compute_grad,
                                               double grad_scale, int64_t reduction) {
  check_kd_loss_inputs(student_in, teacher_in, target_in, temperature_in, ka, lsr_p, ce_weight,
                       grad_scale, reduction);
  const auto [student, teacher, target] = kernel_logits(student_in, teacher_in, target_in);
  const at::Tensor temperature = temperature_in.contiguous();
  const int64_t rows = student.size(0), classes = student.size(1);
  if (target.has_value()) check_labels_on_host(*target, classes, ignore_index);
  check_temperatures_on_host(temperature);

  const bool per_row = reduction == kKdReduceNone;
  at::Tensor loss =
      per_row ? at::empty({rows}, temperature.options()) : at::empty({}, temperature.options());
  const bool in_double = temperature.scalar_type() == at::kDouble;
  std::vector<float> row_float(per_row || in_double ? 0 : rows);
  std::vector<double> row_double(per_row || !in_double ? 0 : rows);
  at::Tensor row_grad = compute_grad ? empty_output({rows, classes}, student.options())
                                     : at::empty({0}, student.options());
  KdLossArgs args{};
  args.student = student.data_ptr();
  args.teacher = teacher.data_ptr();
  args.student_row_stride = student.stride(0);
  args.teacher_row_stride = teacher.stride(0);
  args.target = target.has_value() ? target->data_ptr<int64_t>() : nullptr;
  args.temperature = temperature.data_ptr();
  args.row_loss = per_row     ? loss.data_ptr()
                  : in_double ? static_cast<void*>(row_double.data())
                              : static_cast<void*>(row_float.data());
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
  if (!per_row) {
    if (in_double) {
      reduce_rows(row_double, reduction, loss);
    } else {
      reduce_rows(row_float, reduction, loss);
    }
  }
  return {loss, row_grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CPU, m) { m.impl("kd_loss", &kd_loss_cpu); }

}  // namespace tskd_fast::cpu
