// tskd_fast::hcl_loss on the CPU: checks, then per stage pair the layout and the included levels,
// the kernel of the vector ISA the machine runs, and its per-task partial sums added in a fixed
// order; the pairs' losses are summed in order.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "cpu/hcl_args.h"
#include "cpu/isa_dispatch.h"
#include "tskd_fast/checks.h"
#include "tskd_fast/hcl_checks.h"
#include "tskd_fast/hcl_math.h"
#include "tskd_fast/layout.h"

namespace tskd_fast::cpu {
namespace {

// The loss of one stage pair (in double), and its gradient into `grad` when defined.
double hcl_pair(const at::Tensor& student_in, const at::Tensor& teacher_in, at::IntArrayRef levels,
                bool compute_grad, double grad_scale, at::Tensor& grad) {
  const bool channels_last = kernel_channels_last(student_in);
  const at::Tensor student = in_kernel_layout(student_in, channels_last);
  const at::Tensor teacher = in_kernel_layout(teacher_in, channels_last);
  const int64_t n = student.size(0), c = student.size(1), h = student.size(2), w = student.size(3);
  grad = compute_grad ? empty_in_layout(student.sizes(), student.options(), channels_last)
                      : at::empty({0}, student.options());
  HclArgs args{};
  args.student = student.data_ptr();
  args.teacher = teacher.data_ptr();
  args.grad = compute_grad ? grad.data_ptr() : nullptr;
  args.n = n;
  args.c = c;
  args.h = h;
  args.w = w;
  args.levels = hcl_levels(levels.data(), static_cast<int>(levels.size()), h);
  const double norm = args.levels.tot * static_cast<double>(n) * static_cast<double>(c);
  args.grad_factor = grad_scale * 2.0 / norm;
  args.channels_last = channels_last;
  args.dtype = student.scalar_type();
  std::vector<double> partials(hcl_partial_count(args));
  args.partials = partials.data();
  TSKD_FAST_CALL_ISA(hcl_kernel, args);
  double total = 0;
  for (const double p : partials) total += p;
  return total / norm;
}

std::tuple<at::Tensor, std::vector<at::Tensor>> hcl_loss_cpu(at::TensorList student_feats,
                                                             at::TensorList teacher_feats,
                                                             at::IntArrayRef levels,
                                                             const c10::List<bool>& compute_grad,
                                                             double grad_scale) {
  check_hcl_inputs(student_feats, teacher_feats, levels, compute_grad, grad_scale);
  std::vector<at::Tensor> grads(student_feats.size());
  double loss = 0;
  for (size_t i = 0; i < student_feats.size(); ++i) {
    loss += hcl_pair(student_feats[i], teacher_feats[i], levels, compute_grad.get(i), grad_scale,
                     grads[i]);
  }
  const at::Tensor& first = student_feats[0];
  const auto opmath = first.options().dtype(opmath_type(first.scalar_type()));
  return {at::scalar_tensor(loss, opmath), grads};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CPU, m) { m.impl("hcl_loss", &hcl_loss_cpu); }

}  // namespace tskd_fast::cpu
