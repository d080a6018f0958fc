// Autograd of tskd_fast::convlstm_gates for the C++ ops (CPU and CUDA): the forward saves its
// inputs, the backward op recomputes the activations from them. The Python twin of this formula,
// for the Triton ops, is in tskd_fast/ops/convlstm.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

namespace tskd_fast::autograd {
namespace {

using torch::autograd::SavedVariable;
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

// The node of one call: its inputs (an absent peephole saved undefined), one edge per input.
struct ConvLstmGatesBackward : public torch::autograd::Node {
  std::array<SavedVariable, 5> inputs;  // gates, c_prev, w_ci, w_cf, w_co

  std::string name() const override { return "ConvLstmGatesBackward"; }
  void release_variables() override {
    for (auto& t : inputs) t.reset_data();
  }

  // An unused h or c arrives as an undefined gradient and is read as zero.
  variable_list apply(variable_list&& grads) override {
    static const auto backward_op = c10::Dispatcher::singleton()
                                        .findSchemaOrThrow("tskd_fast::convlstm_gates_backward", "")
                                        .typed<GatesBackwardSignature>();
    variable_list out(5);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    std::array<bool, 5> needs{};
    for (size_t i = 0; i < 5; ++i) needs[i] = task_should_compute_output(i);
    std::array<at::Tensor, 5> saved;
    for (size_t i = 0; i < 5; ++i) saved[i] = inputs[i].unpack();
    const bool peephole_grads = needs[2] || needs[3] || needs[4];
    // Straight to the device kernel, unless the gradient itself is to be differentiated
    // (create_graph=True): then through autograd, which says that the backward op has no formula.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
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
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tskd_fast::convlstm_gates", "")
                             .typed<GatesSignature>();
  std::tuple<at::Tensor, at::Tensor> out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = op.call(gates, c_prev, w_ci, w_cf, w_co);
  }
  const std::array<at::Tensor, 5> inputs{gates, c_prev, w_ci.value_or(at::Tensor()),
                                         w_cf.value_or(at::Tensor()), w_co.value_or(at::Tensor())};
  if (torch::autograd::compute_requires_grad(inputs[0], inputs[1], inputs[2], inputs[3],
                                             inputs[4])) {
    auto node = c10::make_intrusive<ConvLstmGatesBackward>();
    node->set_next_edges(
        torch::autograd::collect_next_edges(inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]));
    for (size_t i = 0; i < 5; ++i) node->inputs[i] = SavedVariable(inputs[i], false);
    torch::autograd::set_history(std::get<0>(out), node);
    torch::autograd::set_history(std::get<1>(out), node);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, Autograd, m) { m.impl("convlstm_gates", &convlstm_gates_autograd); }

}  // namespace tskd_fast::autograd
