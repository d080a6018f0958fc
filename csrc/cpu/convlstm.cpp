// tskd_fast::convlstm_gates and tskd_fast::convlstm_gates_backward on the CPU: checks, the
// kernels' layout, then the kernel of the vector ISA the machine runs.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cpu/convlstm_args.h"
#include "cpu/isa_dispatch.h"
#include "tskd_fast/checks.h"
#include "tskd_fast/convlstm_checks.h"
#include "tskd_fast/layout.h"

namespace tskd_fast::cpu {
namespace {

const void* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr() : nullptr;
}

std::tuple<at::Tensor, at::Tensor> convlstm_gates_cpu(const at::Tensor& gates,
                                                      const at::Tensor& c_prev,
                                                      const std::optional<at::Tensor>& w_ci,
                                                      const std::optional<at::Tensor>& w_cf,
                                                      const std::optional<at::Tensor>& w_co) {
  check_convlstm_gates_inputs(gates, c_prev, w_ci, w_cf, w_co);
  const ConvLstmInputs in = convlstm_kernel_inputs(gates, c_prev, w_ci, w_cf, w_co);
  at::Tensor h = convlstm_empty_state(in, in.c_prev.options());
  at::Tensor c = convlstm_empty_state(in, in.c_prev.options());
  ConvLstmGatesArgs args{};
  args.layout = in.layout;
  args.gates = in.gates.data_ptr();
  args.c_prev = in.c_prev.data_ptr();
  args.w_ci = data_or_null(in.w_ci);
  args.w_cf = data_or_null(in.w_cf);
  args.w_co = data_or_null(in.w_co);
  args.h = h.data_ptr();
  args.c = c.data_ptr();
  args.dtype = in.gates.scalar_type();
  TSKD_FAST_CALL_ISA(convlstm_gates_kernel, args);
  return {h, c};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> convlstm_gates_backward_cpu(
    const std::optional<at::Tensor>& grad_h_in, const std::optional<at::Tensor>& grad_c_in,
    const at::Tensor& gates, const at::Tensor& c_prev, const std::optional<at::Tensor>& w_ci,
    const std::optional<at::Tensor>& w_cf, const std::optional<at::Tensor>& w_co,
    bool peephole_grads) {
  check_convlstm_gates_inputs(gates, c_prev, w_ci, w_cf, w_co);
  check_convlstm_state_grads(grad_h_in, grad_c_in, c_prev);
  const ConvLstmInputs in = convlstm_kernel_inputs(gates, c_prev, w_ci, w_cf, w_co);
  std::optional<at::Tensor> grad_h, grad_c;
  if (grad_h_in.has_value()) grad_h = in_kernel_layout(*grad_h_in, in.channels_last);
  if (grad_c_in.has_value()) grad_c = in_kernel_layout(*grad_c_in, in.channels_last);
  at::Tensor grad_gates = convlstm_empty_gates_like(in);
  at::Tensor grad_c_prev = convlstm_empty_state(in, in.c_prev.options());
  const auto sums_options = in.c_prev.options().dtype(opmath_type(in.c_prev.scalar_type()));
  auto sums_for = [&](const std::optional<at::Tensor>& w) -> std::optional<at::Tensor> {
    if (!peephole_grads || !w.has_value()) return std::nullopt;
    return at::empty({in.layout.rows, in.layout.cols}, sums_options);
  };
  const std::optional<at::Tensor> sum_ci = sums_for(in.w_ci), sum_cf = sums_for(in.w_cf),
                                  sum_co = sums_for(in.w_co);
  ConvLstmGatesBackwardArgs args{};
  args.layout = in.layout;
  args.grad_h = data_or_null(grad_h);
  args.grad_c = data_or_null(grad_c);
  args.gates = in.gates.data_ptr();
  args.c_prev = in.c_prev.data_ptr();
  args.w_ci = data_or_null(in.w_ci);
  args.w_cf = data_or_null(in.w_cf);
  args.w_co = data_or_null(in.w_co);
  args.grad_gates = grad_gates.data_ptr();
  args.grad_c_prev = grad_c_prev.data_ptr();
  args.grad_w_ci = sum_ci.has_value() ? sum_ci->data_ptr() : nullptr;
  args.grad_w_cf = sum_cf.has_value() ? sum_cf->data_ptr() : nullptr;
  args.grad_w_co = sum_co.has_value() ? sum_co->data_ptr() : nullptr;
  args.dtype = in.gates.scalar_type();
  TSKD_FAST_CALL_ISA(convlstm_gates_backward_kernel, args);
  auto peephole_grad = [&](const std::optional<at::Tensor>& sums,
                           const std::optional<at::Tensor>& w) {
    return sums.has_value() ? convlstm_peephole_grad(*sums, *w, in.channels_last)
                            : at::empty({0}, gates.options());
  };
  return {grad_gates, grad_c_prev, peephole_grad(sum_ci, w_ci), peephole_grad(sum_cf, w_cf),
          peephole_grad(sum_co, w_co)};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CPU, m) {
  m.impl("convlstm_gates", &convlstm_gates_cpu);
  m.impl("convlstm_gates_backward", &convlstm_gates_backward_cpu);
}

}  // namespace tskd_fast::cpu
