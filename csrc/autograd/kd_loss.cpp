// Autograd of tskd_fast::kd_loss for the C++ ops (CPU and CUDA): the forward writes the gradient,
// so backward only scales it by the incoming gradient (autograd/saved_gradient.h). The Python twin
// of this formula, for the Triton op, is in tskd_fast/ops/kd_loss.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "autograd/saved_gradient.h"
#include "tskd_fast/kd_loss_checks.h"

namespace tskd_fast::autograd {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using KdLossSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                           const std::optional<at::Tensor>&,
                                                           const at::Tensor&, int64_t, double, bool,
                                                           double, int64_t, bool, double, int64_t);
constexpr int kKdLossArguments = 12;

class KdLossFunction : public torch::autograd::Function<KdLossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student,
                               const at::Tensor& teacher, const std::optional<at::Tensor>& target,
                               const at::Tensor& temperature, int64_t ka, double lsr_p,
                               bool scale_tau2, double ce_weight, int64_t ignore_index,
                               bool compute_grad, double grad_scale, int64_t reduction) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("tskd_fast::kd_loss", "")
                               .typed<KdLossSignature>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, row_grad] = op.call(student, teacher, target, temperature, ka, lsr_p, scale_tau2,
                                    ce_weight, ignore_index, compute_grad, grad_scale, reduction);
    ctx->mark_non_differentiable({row_grad});
    // An unused loss gradient stays undefined instead of a zero tensor.
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({row_grad});
    ctx->saved_data["compute_grad"] = compute_grad;
    ctx->saved_data["grad_scale"] = grad_scale;
    // The factor of the reduction: d mean / d row_loss[n] = 1 / B.
    ctx->saved_data["weight"] =
        reduction == kKdReduceMean ? 1.0 / static_cast<double>(student.size(0)) : 1.0;
    return {loss, row_grad};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(kKdLossArguments);
    if (!grads[0].defined()) return out;
    TORCH_CHECK(ctx->saved_data["compute_grad"].toBool(),
                "tskd_fast::kd_loss was called with compute_grad=False, so it kept no gradient; "
                "call it with compute_grad=True to backpropagate");
    const at::Tensor row_grad = ctx->get_saved_variables()[0];
    out[0] = scale_saved_gradient(row_grad, grads[0], ctx->saved_data["weight"].toDouble(),
                                  ctx->saved_data["grad_scale"].toDouble());
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> kd_loss_autograd(
    const at::Tensor& student, const at::Tensor& teacher, const std::optional<at::Tensor>& target,
    const at::Tensor& temperature, int64_t ka, double lsr_p, bool scale_tau2, double ce_weight,
    int64_t ignore_index, bool compute_grad, double grad_scale, int64_t reduction) {
  const variable_list out =
      KdLossFunction::apply(student, teacher, target, temperature, ka, lsr_p, scale_tau2, ce_weight,
                            ignore_index, compute_grad, grad_scale, reduction);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, Autograd, m) { m.impl("kd_loss", &kd_loss_autograd); }

}  // namespace tskd_fast::autograd
