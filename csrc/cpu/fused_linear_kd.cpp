// tskd_fast::fused_linear_kd_rows on the CPU: checks, value checks that need the data, then the
// row kernel of the vector ISA the machine runs.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/fused_linear_kd_args.h"
#include "cpu/isa_dispatch.h"
#include "tskd_fast/checks.h"
#include "tskd_fast/fused_linear_kd_checks.h"
#include "tskd_fast/logits_checks.h"

namespace tskd_fast::cpu {
namespace {

at::Tensor fused_linear_kd_rows_cpu(
    at::Tensor& student, const std::optional<at::Tensor>& teacher_in,
    const std::optional<at::Tensor>& topk_ids_in, const std::optional<at::Tensor>& topk_logprobs_in,
    const std::optional<at::Tensor>& target_in, const at::Tensor& temperature_in,
    int64_t divergence, double beta, int64_t ka, double lsr_p, bool scale_tau2, double ce_weight,
    int64_t ignore_index, bool compute_grad, double grad_scale) {
  check_fused_linear_kd_rows_inputs(student, teacher_in, topk_ids_in, topk_logprobs_in, target_in,
                                    temperature_in, divergence, beta, ka, lsr_p, ce_weight,
                                    grad_scale);
  const int64_t rows = student.size(0), classes = student.size(1);
  std::optional<at::Tensor> teacher;
  if (teacher_in.has_value()) teacher = with_unit_class_stride(*teacher_in);
  std::optional<at::Tensor> topk_ids, topk_logprobs, target;
  if (topk_ids_in.has_value()) {
    topk_ids = topk_ids_in->contiguous();
    topk_logprobs = topk_logprobs_in->contiguous();
  }
  if (target_in.has_value()) {
    target = target_in->contiguous();
    check_labels_on_host(*target, classes, ignore_index);
  }
  if (topk_ids.has_value()) check_topk_ids_on_host(*topk_ids, classes);
  const at::Tensor temperature = temperature_in.contiguous();
  check_temperatures_on_host(temperature);
  at::Tensor row_loss = at::empty({rows}, temperature.options());
  FlkdRowsArgs args{};
  args.student = student.data_ptr();
  args.student_row_stride = student.stride(0);
  args.teacher = teacher.has_value() ? teacher->data_ptr() : nullptr;
  args.teacher_row_stride = teacher.has_value() ? teacher->stride(0) : 0;
  args.topk_ids = topk_ids.has_value() ? topk_ids->data_ptr<int64_t>() : nullptr;
  args.topk_logprobs = topk_logprobs.has_value() ? topk_logprobs->data_ptr() : nullptr;
  args.topk = topk_ids.has_value() ? topk_ids->size(1) : 0;
  args.target = target.has_value() ? target->data_ptr<int64_t>() : nullptr;
  args.temperature = temperature.data_ptr();
  args.row_loss = row_loss.data_ptr();
  args.rows = rows;
  args.classes = classes;
  args.divergence = divergence;
  args.beta = beta;
  args.ka = ka;
  args.lsr_p = lsr_p;
  args.scale_tau2 = scale_tau2;
  args.ce_weight = ce_weight;
  args.ignore_index = ignore_index;
  args.compute_grad = compute_grad;
  args.grad_scale = grad_scale;
  args.dtype = student.scalar_type();
  TSKD_FAST_CALL_ISA(fused_linear_kd_rows_kernel, args);
  return row_loss;
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CPU, m) { m.impl("fused_linear_kd_rows", &fused_linear_kd_rows_cpu); }

}  // namespace tskd_fast::cpu
