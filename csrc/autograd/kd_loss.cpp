// Autograd of tskd_fast::kd_loss for the C++ ops (CPU and CUDA): the forward writes the gradient,
// so backward only scales it by the incoming gradient (autograd/saved_gradient.h). The Python twin
// of this formula, for the Triton op, is in tskd_fast/ops/kd_loss.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "autograd/saved_gradient.h"
#include "tskd_fast/kd_loss_checks.h"

namespace tskd_fast::autograd {
namespace {

using torch::autograd::variable_list;

// The node of one call: the gradient the forward wrote, and how to scale it.
struct KdLossBackward : public torch::autograd::Node {
  torch::autograd::SavedVariable row_grad;
  bool compute_grad = false;
  double grad_scale = 1.0;
  double weight = 1.0;  // the reduction's factor: 1/B for the mean

  std::string name() const override { return "KdLossBackward"; }
  void release_variables() override { row_grad.reset_data(); }

  variable_list apply(variable_list&& grads) override {
    variable_list out(1);
    if (!grads[0].defined() || !task_should_compute_output(0)) return out;
    TORCH_CHECK(compute_grad,
                "tskd_fast::kd_loss was called with compute_grad=False, so it kept no gradient; "
                "call it with compute_grad=True to backpropagate");
    out[0] = scale_saved_gradient(row_grad.unpack(), grads[0], weight, grad_scale);
    return out;
  }
};

using KdLossSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                           const std::optional<at::Tensor>&,
                                                           const at::Tensor&, int64_t, double, bool,
                                                           double, int64_t, bool, double, int64_t);

std::tuple<at::Tensor, at::Tensor> kd_loss_autograd(
    const at::Tensor& student, const at::Tensor& teacher, const std::optional<at::Tensor>& target,
    const at::Tensor& temperature, int64_t ka, double lsr_p, bool scale_tau2, double ce_weight,
    int64_t ignore_index, bool compute_grad, double grad_scale, int64_t reduction) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tskd_fast::kd_loss", "")
                             .typed<KdLossSignature>();
  std::tuple<at::Tensor, at::Tensor> out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = op.call(student, teacher, target, temperature, ka, lsr_p, scale_tau2, ce_weight,
                  ignore_index, compute_grad, grad_scale, reduction);
  }
  // Only the student logits get a gradient: the teacher, labels and temperatures are constants.
  if (torch::autograd::compute_requires_grad(student)) {
    auto node = c10::make_intrusive<KdLossBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(student));
    node->row_grad = torch::autograd::SavedVariable(std::get<1>(out), false);
    node->compute_grad = compute_grad;
    node->grad_scale = grad_scale;
    node->weight = reduction == kKdReduceMean ? 1.0 / static_cast<double>(student.size(0)) : 1.0;
    torch::autograd::set_history(std::get<0>(out), node);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, Autograd, m) { m.impl("kd_loss", &kd_loss_autograd); }

}  // namespace tskd_fast::autograd
