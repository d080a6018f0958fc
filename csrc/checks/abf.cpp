#include <c10/util/Exception.h>

#include <cstdint>

#include "tskd_fast/abf_checks.h"
#include "tskd_fast/checks.h"

namespace tskd_fast {
namespace {

void check_maps(const at::Tensor& x, const at::Tensor& y) {
  check_feature_map(x, "x");
  check_feature_map(y, "y");
  check_dtype_and_device(y, "y", x, "x", x.scalar_type());
  TORCH_CHECK_VALUE(y.size(0) == x.size(0), "y (the residual) has batch size ", y.size(0),
                    " but x has ", x.size(0));
  TORCH_CHECK_VALUE(y.size(1) == x.size(1), "y (the residual) has ", y.size(1),
                    " channels but x has ", x.size(1));
  TORCH_CHECK_VALUE(y.size(2) <= x.size(2) && y.size(3) <= x.size(3),
                    "y (the residual) of spatial size ", py_shape(y.sizes().slice(2)),
                    " cannot be fused into x of size ", py_shape(x.sizes().slice(2)),
                    ": the residual is upsampled, so it must be at most as large as x");
  TORCH_CHECK_VALUE(x.size(2) * x.size(3) <= INT32_MAX, "x has ", x.size(2) * x.size(3),
                    " pixels per map, at most 2^31 - 1 are supported");
}

void check_weight(const at::Tensor& weight, const at::Tensor& x) {
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == 2 && weight.size(1) == 2 * x.size(1),
                    "weight must have shape (2, 2M) = (2, ", 2 * x.size(1), "), got ",
                    py_shape(weight.sizes()));
  check_dtype_and_device(weight, "weight", x, "x", opmath_type(x.scalar_type()));
}

}  // namespace

void check_abf_fuse_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight,
                           const at::Tensor& bias) {
  check_maps(x, y);
  check_weight(weight, x);
  TORCH_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == 2, "bias must have shape (2,), got ",
                    py_shape(bias.sizes()));
  check_dtype_and_device(bias, "bias", x, "x", opmath_type(x.scalar_type()));
}

void check_abf_fuse_backward_inputs(const at::Tensor& grad, const at::Tensor& x,
                                    const at::Tensor& y, const at::Tensor& weight,
                                    const at::Tensor& gates) {
  check_maps(x, y);
  check_weight(weight, x);
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), "grad must have the shape of x ",
                    py_shape(x.sizes()), ", got ", py_shape(grad.sizes()));
  check_dtype_and_device(grad, "grad", x, "x", x.scalar_type());
  const int64_t pixels = x.size(2) * x.size(3);
  TORCH_CHECK_VALUE(gates.dim() == 3 && gates.size(0) == x.size(0) && gates.size(1) == pixels &&
                        gates.size(2) == 2,
                    "gates must have shape (N, h * w, 2) = (", x.size(0), ", ", pixels,
                    ", 2), got ", py_shape(gates.sizes()));
  check_dtype_and_device(gates, "gates", x, "x", opmath_type(x.scalar_type()));
}

}  // namespace tskd_fast
