#include "abf_hcl_checks.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

#include "cpu/output_pool.h"
#include "tskd_fast/checks.h"
#include "tskd_fast/hcl_math.h"

namespace tskd_fast {
namespace {

void check_map(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must be 4-D (N, C, H, W), got shape ", t.sizes());
  TORCH_CHECK(t.numel() > 0, op, ": ", name, " is empty (shape ", t.sizes(), ")");
  const auto dtype = t.scalar_type();
  TORCH_CHECK(
      dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
      op, ": ", name, " must be float32, float16, bfloat16 or float64, got ", dtype);
  TORCH_CHECK(dtype != at::kDouble || t.device().is_cpu(), op, ": float64 ", name,
              " is supported on the CPU only");
}

void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name,
                at::ScalarType dtype, const char* op) {
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name,
              " is on ", ref.device());
}

}  // namespace

bool kernel_channels_last(const at::Tensor& map) {
  return !map.is_contiguous() && map.is_contiguous(at::MemoryFormat::ChannelsLast);
}

at::Tensor in_kernel_layout(const at::Tensor& t, bool channels_last) {
  return t.contiguous(channels_last ? at::MemoryFormat::ChannelsLast
                                    : at::MemoryFormat::Contiguous);
}

at::Tensor empty_in_layout(at::IntArrayRef sizes, const at::TensorOptions& options,
                           bool channels_last) {
  return cpu::empty_output(
      sizes, options,
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

void check_abf_fuse_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight,
                           const at::Tensor& bias, const char* op) {
  check_map(x, "x", op);
  check_map(y, "y", op);
  check_like(y, "y", x, "x", x.scalar_type(), op);
  TORCH_CHECK(y.size(0) == x.size(0) && y.size(1) == x.size(1), op,
              ": y (the residual) must have the batch size and channels of x (", x.size(0), ", ",
              x.size(1), "), got shape ", y.sizes());
  TORCH_CHECK(y.size(2) <= x.size(2) && y.size(3) <= x.size(3), op,
              ": y (the residual) is upsampled to x's size, so it must be at most as large; got y ",
              y.sizes(), " and x ", x.sizes());
  TORCH_CHECK(y.size(2) * y.size(3) <= INT32_MAX && x.size(2) * x.size(3) <= INT32_MAX, op,
              ": at most 2^31 - 1 pixels per map");
  const auto opmath = opmath_type(x.scalar_type());
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == 2 && weight.size(1) == 2 * x.size(1), op,
              ": weight must have shape (2, 2M) = (2, ", 2 * x.size(1), "), got ", weight.sizes());
  check_like(weight, "weight", x, "x", opmath, op);
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == 2, op, ": bias must have shape (2,), got ",
              bias.sizes());
  check_like(bias, "bias", x, "x", opmath, op);
}

void check_abf_fuse_backward_inputs(const at::Tensor& grad, const at::Tensor& x,
                                    const at::Tensor& y, const at::Tensor& weight,
                                    const at::Tensor& gates, const char* op) {
  const auto opmath = opmath_type(x.scalar_type());
  check_abf_fuse_inputs(x, y, weight, at::empty({2}, x.options().dtype(opmath)), op);
  TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad must have the shape of x ", x.sizes(),
              ", got ", grad.sizes());
  check_like(grad, "grad", x, "x", x.scalar_type(), op);
  TORCH_CHECK(gates.dim() == 3 && gates.size(0) == x.size(0) &&
                  gates.size(1) == x.size(2) * x.size(3) && gates.size(2) == 2,
              op, ": gates must have shape (N, h * w, 2) = (", x.size(0), ", ",
              x.size(2) * x.size(3), ", 2), got ", gates.sizes());
  check_like(gates, "gates", x, "x", opmath, op);
}

void check_hcl_inputs(const at::Tensor& student, const at::Tensor& teacher, at::IntArrayRef levels,
                      double grad_scale, const char* op) {
  check_map(student, "student", op);
  TORCH_CHECK(teacher.sizes() == student.sizes(), op, ": teacher must have the shape of student ",
              student.sizes(), ", got ", teacher.sizes());
  check_like(teacher, "teacher", student, "student", student.scalar_type(), op);
  TORCH_CHECK(static_cast<int64_t>(levels.size()) <= kHclMaxLevels, op, ": at most ", kHclMaxLevels,
              " levels, got ", levels.size());
  for (const int64_t level : levels) {
    TORCH_CHECK(level >= 1, op, ": levels must all be >= 1, got ", levels);
  }
  TORCH_CHECK(std::isfinite(grad_scale), op, ": grad_scale must be finite, got ", grad_scale);
}

}  // namespace tskd_fast
