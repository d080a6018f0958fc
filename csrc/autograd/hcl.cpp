// Autograd of tskd_fast::hcl_loss for the C++ ops (CPU and CUDA): the forward writes each stage
// pair's gradient, so backward only scales them by the incoming gradient
// (autograd/saved_gradient.h). The Python twin of this formula, for the Triton op, is in
// tskd_fast/ops/hcl.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "autograd/saved_gradient.h"

namespace tskd_fast::autograd {
namespace {

using torch::autograd::variable_list;

// The node of one call: per stage pair the gradient the forward wrote (or none).
struct HclLossBackward : public torch::autograd::Node {
  std::vector<torch::autograd::SavedVariable> grads;
  std::vector<bool> compute_grad;
  double grad_scale = 1.0;

  std::string name() const override { return "HclLossBackward"; }
  void release_variables() override {
    for (auto& g : grads) g.reset_data();
  }

  variable_list apply(variable_list&& incoming) override {
    variable_list out(grads.size());
    if (!incoming[0].defined()) return out;
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!task_should_compute_output(i)) continue;
      TORCH_CHECK(compute_grad[i], "tskd_fast::hcl_loss was called with compute_grad[", i,
                  "]=False, so it kept no gradient of student_feats[", i,
                  "]; call it with compute_grad=True to backpropagate");
      out[i] = scale_saved_gradient(grads[i].unpack(), incoming[0], 1.0, grad_scale);
    }
    return out;
  }
};

using HclSignature = std::tuple<at::Tensor, std::vector<at::Tensor>>(at::TensorList, at::TensorList,
                                                                     at::IntArrayRef,
                                                                     const c10::List<bool>&,
                                                                     double);

std::tuple<at::Tensor, std::vector<at::Tensor>> hcl_loss_autograd(
    at::TensorList student_feats, at::TensorList teacher_feats, at::IntArrayRef levels,
    const c10::List<bool>& compute_grad, double grad_scale) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tskd_fast::hcl_loss", "")
                             .typed<HclSignature>();
  std::tuple<at::Tensor, std::vector<at::Tensor>> out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = op.call(student_feats, teacher_feats, levels, compute_grad, grad_scale);
  }
  // Only the student features get a gradient: the teacher features are constants.
  if (torch::autograd::compute_requires_grad(student_feats)) {
    auto node = c10::make_intrusive<HclLossBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(student_feats));
    const std::vector<at::Tensor>& grads = std::get<1>(out);
    for (size_t i = 0; i < grads.size(); ++i) {
      node->grads.emplace_back(grads[i], false);
      node->compute_grad.push_back(compute_grad.get(i));
    }
    node->grad_scale = grad_scale;
    torch::autograd::set_history(std::get<0>(out), node);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, Autograd, m) { m.impl("hcl_loss", &hcl_loss_autograd); }

}  // namespace tskd_fast::autograd
