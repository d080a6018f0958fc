// tskd_fast::hcl_loss on the CPU: checks, the layout and the included levels, the kernel of the
// vector ISA the machine runs, then the per-task partial sums added in a fixed order.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "abf_hcl_checks.h"
#include "cpu/hcl_args.h"
#include "cpu/isa_dispatch.h"
#include "tskd_fast/checks.h"
#include "tskd_fast/hcl_math.h"

namespace tskd_fast::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> hcl_loss_cpu(const at::Tensor& student_in,
                                                const at::Tensor& teacher_in,
                                                at::IntArrayRef levels, bool compute_grad,
                                                double grad_scale) {
  check_hcl_inputs(student_in, teacher_in, levels, grad_scale, "tskd_fast::hcl_loss");
  const bool channels_last = kernel_channels_last(student_in);
  const at::Tensor student = in_kernel_layout(student_in, channels_last);
  const at::Tensor teacher = in_kernel_layout(teacher_in, channels_last);
  const int64_t n = student.size(0), c = student.size(1), h = student.size(2), w = student.size(3);
  at::Tensor grad = compute_grad
                        ? empty_in_layout(student.sizes(), student.options(), channels_last)
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
  const auto opmath = student.options().dtype(opmath_type(student.scalar_type()));
  return {at::scalar_tensor(total / norm, opmath), grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CPU, m) { m.impl("hcl_loss", &hcl_loss_cpu); }

}  // namespace tskd_fast::cpu
