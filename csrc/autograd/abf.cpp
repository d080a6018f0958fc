// Autograd of tskd_fast::abf_fuse for the C++ ops (CPU and CUDA): the forward keeps the two
// per-pixel gate values, the backward op re-reads the incoming gradient, x and y. The Python twin
// of this formula, for the Triton ops, is in tskd_fast/ops/abf.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <tuple>

namespace tskd_fast::autograd {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using FuseSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                         const at::Tensor&, const at::Tensor&);
using FuseBackwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&);

class AbfFuseFunction : public torch::autograd::Function<AbfFuseFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& y,
                               const at::Tensor& weight, const at::Tensor& bias) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("tskd_fast::abf_fuse", "")
                               .typed<FuseSignature>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [fused, gates] = op.call(x, y, weight, bias);
    ctx->mark_non_differentiable({gates});
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({x, y, weight, gates});
    return {fused, gates};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto backward_op = c10::Dispatcher::singleton()
                                        .findSchemaOrThrow("tskd_fast::abf_fuse_backward", "")
                                        .typed<FuseBackwardSignature>();
    variable_list out(4);
    if (!grads[0].defined()) return out;
    const variable_list saved = ctx->get_saved_variables();
    auto [grad_x, grad_y, grad_weight, grad_bias] =
        backward_op.call(grads[0], saved[0], saved[1], saved[2], saved[3]);
    const std::array<at::Tensor, 4> all{grad_x, grad_y, grad_weight, grad_bias};
    for (size_t i = 0; i < 4; ++i) {
      if (ctx->needs_input_grad(i)) out[i] = all[i];
    }
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> abf_fuse_autograd(const at::Tensor& x, const at::Tensor& y,
                                                     const at::Tensor& weight,
                                                     const at::Tensor& bias) {
  const variable_list out = AbfFuseFunction::apply(x, y, weight, bias);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, Autograd, m) { m.impl("abf_fuse", &abf_fuse_autograd); }

}  // namespace tskd_fast::autograd
