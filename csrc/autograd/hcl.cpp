// Autograd of tskd_fast::hcl_loss for the C++ ops (CPU and CUDA): the forward writes each stage
// pair's gradient, so backward only scales them by the incoming gradient
// (autograd/saved_gradient.h). The Python twin of this formula, for the Triton op, is in
// tskd_fast/ops/hcl.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "autograd/saved_gradient.h"

namespace tskd_fast::autograd {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using HclSignature = std::tuple<at::Tensor, std::vector<at::Tensor>>(at::TensorList, at::TensorList,
                                                                     at::IntArrayRef,
                                                                     const c10::List<bool>&,
                                                                     double);

class HclLossFunction : public torch::autograd::Function<HclLossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList student_feats,
                               at::TensorList teacher_feats, at::IntArrayRef levels,
                               const c10::List<bool>& compute_grad, double grad_scale) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("tskd_fast::hcl_loss", "")
                               .typed<HclSignature>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grads] = op.call(student_feats, teacher_feats, levels, compute_grad, grad_scale);
    ctx->mark_non_differentiable(grads);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward(grads);
    ctx->saved_data["grad_scale"] = grad_scale;
    ctx->saved_data["compute_grad"] = compute_grad.copy();
    variable_list out{loss};
    out.insert(out.end(), grads.begin(), grads.end());
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const size_t pairs = saved.size();
    // One gradient per tensor of the two lists, then levels, compute_grad and grad_scale.
    variable_list out(2 * pairs + 3);
    if (!grads[0].defined()) return out;
    const c10::List<bool> compute_grad = ctx->saved_data["compute_grad"].toBoolList();
    const double grad_scale = ctx->saved_data["grad_scale"].toDouble();
    for (size_t i = 0; i < pairs; ++i) {
      if (!ctx->needs_input_grad(i)) continue;
      TORCH_CHECK(compute_grad.get(i), "tskd_fast::hcl_loss was called with compute_grad[", i,
                  "]=False, so it kept no gradient of student_feats[", i,
                  "]; call it with compute_grad=True to backpropagate");
      out[i] = scale_saved_gradient(saved[i], grads[0], 1.0, grad_scale);
    }
    return out;
  }
};

std::tuple<at::Tensor, std::vector<at::Tensor>> hcl_loss_autograd(
    at::TensorList student_feats, at::TensorList teacher_feats, at::IntArrayRef levels,
    const c10::List<bool>& compute_grad, double grad_scale) {
  const variable_list out =
      HclLossFunction::apply(student_feats, teacher_feats, levels, compute_grad, grad_scale);
  return {out[0], std::vector<at::Tensor>(out.begin() + 1, out.end())};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, Autograd, m) { m.impl("hcl_loss", &hcl_loss_autograd); }

}  // namespace tskd_fast::autograd
