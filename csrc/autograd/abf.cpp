// Autograd of tskd_fast::abf_fuse for the C++ ops (CPU and CUDA): the forward keeps the two
// per-pixel gate values, the backward op re-reads the incoming gradient, x and y. The Python twin
// of this formula, for the Triton ops, is in tskd_fast/ops/abf.py.
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

using FuseSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                         const at::Tensor&, const at::Tensor&);
using FuseBackwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&);

// The node of one call: x, y, the weight and the gates; one edge per input (x, y, weight, bias).
struct AbfFuseBackward : public torch::autograd::Node {
  SavedVariable x, y, weight, gates;

  std::string name() const override { return "AbfFuseBackward"; }
  void release_variables() override {
    x.reset_data();
    y.reset_data();
    weight.reset_data();
    gates.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    static const auto backward_op = c10::Dispatcher::singleton()
                                        .findSchemaOrThrow("tskd_fast::abf_fuse_backward", "")
                                        .typed<FuseBackwardSignature>();
    variable_list out(4);
    if (!grads[0].defined()) return out;
    // Straight to the device kernel, unless the gradient itself is to be differentiated
    // (create_graph=True): then through autograd, which says that the backward op has no formula.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
    auto [grad_x, grad_y, grad_weight, grad_bias] =
        backward_op.call(grads[0], x.unpack(), y.unpack(), weight.unpack(), gates.unpack());
    const std::array<at::Tensor, 4> all{grad_x, grad_y, grad_weight, grad_bias};
    for (size_t i = 0; i < 4; ++i) {
      if (task_should_compute_output(i)) out[i] = all[i];
    }
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> abf_fuse_autograd(const at::Tensor& x, const at::Tensor& y,
                                                     const at::Tensor& weight,
                                                     const at::Tensor& bias) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tskd_fast::abf_fuse", "")
                             .typed<FuseSignature>();
  std::tuple<at::Tensor, at::Tensor> out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = op.call(x, y, weight, bias);
  }
  if (torch::autograd::compute_requires_grad(x, y, weight, bias)) {
    auto node = c10::make_intrusive<AbfFuseBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(x, y, weight, bias));
    node->x = SavedVariable(x, false);
    node->y = SavedVariable(y, false);
    node->weight = SavedVariable(weight, false);
    node->gates = SavedVariable(std::get<1>(out), false);
    // The gates are returned for the backward, not differentiated: only `fused` has history.
    torch::autograd::set_history(std::get<0>(out), node);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, Autograd, m) { m.impl("abf_fuse", &abf_fuse_autograd); }

}  // namespace tskd_fast::autograd
