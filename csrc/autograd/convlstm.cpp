// Autograd of tskd_fast::convlstm_gates for the C++ ops (CPU and CUDA): the forward saves its
// inputs, the backward op recomputes the activations from them. The Python twin of this formula,
// for the Triton ops, is in tskd_fast/ops/convlstm.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

namespace tskd_fast::autograd {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<at::Tensor>;

using GatesSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                          const OptionalTensor&,
                                                          const OptionalTensor&,
                                                          const OptionalTensor&);
using GatesBackwardSignature =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
        const OptionalTensor&, const OptionalTensor&, const at::Tensor&, const at::Tensor&,
        const OptionalTensor&, const OptionalTensor&, const OptionalTensor&, bool);

OptionalTensor present(const at::Tensor& t) {
  return t.defined() ? OptionalTensor(t) : std::nullopt;
}

class ConvLstmGatesFunction : public torch::autograd::Function<ConvLstmGatesFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& gates,
                               const at::Tensor& c_prev, const OptionalTensor& w_ci,
                               const OptionalTensor& w_cf, const OptionalTensor& w_co) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("tskd_fast::convlstm_gates", "")
                               .typed<GatesSignature>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [h, c] = op.call(gates, c_prev, w_ci, w_cf, w_co);
    // An unused h or c arrives as an undefined gradient and is read as zero.
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({gates, c_prev, w_ci.value_or(at::Tensor()), w_cf.value_or(at::Tensor()),
                            w_co.value_or(at::Tensor())});
    return {h, c};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto backward_op = c10::Dispatcher::singleton()
                                        .findSchemaOrThrow("tskd_fast::convlstm_gates_backward", "")
                                        .typed<GatesBackwardSignature>();
    variable_list out(5);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    const variable_list saved = ctx->get_saved_variables();
    // Which arguments want a gradient; an absent peephole has no autograd edge.
    std::array<bool, 5> needs{};
    size_t edge = 0;
    for (size_t i = 0; i < 5; ++i) needs[i] = saved[i].defined() && ctx->needs_input_grad(edge++);
    const bool peephole_grads = needs[2] || needs[3] || needs[4];
    auto [grad_gates, grad_c_prev, grad_w_ci, grad_w_cf, grad_w_co] =
        backward_op.call(present(grads[0]), present(grads[1]), saved[0], saved[1],
                         present(saved[2]), present(saved[3]), present(saved[4]), peephole_grads);
    const std::array<at::Tensor, 5> all{grad_gates, grad_c_prev, grad_w_ci, grad_w_cf, grad_w_co};
    for (size_t i = 0; i < 5; ++i) {
      if (needs[i]) out[i] = all[i];
    }
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> convlstm_gates_autograd(const at::Tensor& gates,
                                                           const at::Tensor& c_prev,
                                                           const OptionalTensor& w_ci,
                                                           const OptionalTensor& w_cf,
                                                           const OptionalTensor& w_co) {
  const variable_list out = ConvLstmGatesFunction::apply(gates, c_prev, w_ci, w_cf, w_co);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, Autograd, m) { m.impl("convlstm_gates", &convlstm_gates_autograd); }

}  // namespace tskd_fast::autograd
