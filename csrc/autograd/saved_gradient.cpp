#include "autograd/saved_gradient.h"

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>

namespace tskd_fast::autograd {
namespace {

// Every element of the 0-d or 1-D `t` (strides as they are: an expanded gradient reads one value)
// times `weight` equals `target`.
template <typename T>
bool all_equal(const at::Tensor& t, double weight, double target) {
  const T* data = t.const_data_ptr<T>();
  const int64_t count = t.dim() == 0 ? 1 : t.size(0);
  const int64_t stride = t.dim() == 0 ? 0 : t.stride(0);
  for (int64_t n = 0; n < count; ++n) {
    if (static_cast<double>(data[n * stride]) * weight != target) return false;
  }
  return true;
}

bool incoming_is_grad_scale(const at::Tensor& incoming, double weight, double grad_scale) {
  if (incoming.dim() > 1 || !values_readable(incoming)) return false;
  if (incoming.scalar_type() == at::kFloat) return all_equal<float>(incoming, weight, grad_scale);
  if (incoming.scalar_type() == at::kDouble) return all_equal<double>(incoming, weight, grad_scale);
  return false;
}

}  // namespace

bool values_readable(const at::Tensor& t) {
  static const c10::DispatchKeySet plain_cpu{c10::DispatchKey::CPU, c10::DispatchKey::AutogradCPU,
                                             c10::DispatchKey::ADInplaceOrView,
                                             c10::DispatchKey::AutocastCPU};
  if (!t.defined() || t.layout() != at::kStrided || !plain_cpu.isSupersetOf(t.key_set())) {
    return false;
  }
  if (c10::impl::TorchDispatchModeTLS::any_modes_set()) return false;
  const c10::DispatchKeySet included = c10::impl::tls_local_dispatch_key_set().included_;
  return (included - c10::default_included_set).empty();
}

at::Tensor scale_saved_gradient(const at::Tensor& saved, const at::Tensor& incoming, double weight,
                                double grad_scale) {
  if (saved.is_cpu() && incoming_is_grad_scale(incoming, weight, grad_scale)) return saved;
  // One value per row (a (B,) incoming) scales that row: shape it (B, 1, ...) to broadcast.
  at::Tensor factor = incoming * (weight / grad_scale);
  if (factor.dim() == 1 && saved.dim() > 1) {
    std::vector<int64_t> shape(saved.dim(), 1);
    shape[0] = factor.size(0);
    factor = factor.view(shape);
  }
  if (factor.scalar_type() != at::kDouble && factor.scalar_type() != at::kFloat) {
    factor = factor.to(at::kFloat);
  }
  // Written in saved's dtype in one pass, the product formed in float32 (float64 for float64).
  at::Tensor out = at::empty_like(saved);
  return at::mul_out(out, saved, factor);
}

}  // namespace tskd_fast::autograd
