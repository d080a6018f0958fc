#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <vector>

#include "tskd_fast/checks.h"
#include "tskd_fast/convlstm_checks.h"
#include "tskd_fast/layout.h"

namespace tskd_fast {
namespace {

void check_peephole(const std::optional<at::Tensor>& w, const char* name, const at::Tensor& gates,
                    const at::Tensor& c_prev) {
  if (!w.has_value()) return;
  const std::vector<int64_t> plane{c_prev.size(1), c_prev.size(2), c_prev.size(3)};
  const std::vector<int64_t> batched{1, c_prev.size(1), c_prev.size(2), c_prev.size(3)};
  TORCH_CHECK_VALUE(w->sizes() == at::IntArrayRef(plane) || w->sizes() == at::IntArrayRef(batched),
                    name, " must have shape (C_h, H, W) = ", py_shape(plane),
                    " or (1, C_h, H, W) = ", py_shape(batched), ", got ", py_shape(w->sizes()));
  TORCH_CHECK_VALUE(w->scalar_type() == gates.scalar_type(), name,
                    " must have the dtype of gates (", py_dtype(gates.scalar_type()), "), got ",
                    py_dtype(w->scalar_type()));
  TORCH_CHECK_VALUE(w->device() == gates.device(), name, " is on ", w->device(),
                    " but gates is on ", gates.device());
}

void check_state_grad(const std::optional<at::Tensor>& grad, const char* name,
                      const at::Tensor& c_prev) {
  if (!grad.has_value()) return;
  TORCH_CHECK_VALUE(grad->sizes() == c_prev.sizes(), name, " must have the shape of c_prev ",
                    py_shape(c_prev.sizes()), ", got ", py_shape(grad->sizes()));
  TORCH_CHECK_VALUE(grad->scalar_type() == c_prev.scalar_type(), name,
                    " must have the dtype of gates (", py_dtype(c_prev.scalar_type()), "), got ",
                    py_dtype(grad->scalar_type()));
  TORCH_CHECK_VALUE(grad->device() == c_prev.device(), name, " is on ", grad->device(),
                    " but gates is on ", c_prev.device());
}

// (C_h, H, W) or (1, C_h, H, W) as (rows, cols) contiguous in the kernels' layout.
at::Tensor peephole_rows(const at::Tensor& w, const at::Tensor& c_prev, bool channels_last) {
  const at::Tensor plane = w.reshape({c_prev.size(1), c_prev.size(2), c_prev.size(3)});
  return channels_last ? plane.permute({1, 2, 0}).contiguous() : plane.contiguous();
}

std::optional<at::Tensor> peephole_rows(const std::optional<at::Tensor>& w,
                                        const at::Tensor& c_prev, bool channels_last) {
  if (!w.has_value()) return std::nullopt;
  return peephole_rows(*w, c_prev, channels_last);
}

}  // namespace

void check_convlstm_gates_inputs(const at::Tensor& gates, const at::Tensor& c_prev,
                                 const std::optional<at::Tensor>& w_ci,
                                 const std::optional<at::Tensor>& w_cf,
                                 const std::optional<at::Tensor>& w_co) {
  const auto dtype = gates.scalar_type();
  TORCH_CHECK_VALUE(is_kernel_dtype(dtype),
                    "gates must be float32, float16, bfloat16 or float64, got ", py_dtype(dtype));
  TORCH_CHECK_VALUE(is_kernel_dtype(c_prev.scalar_type()),
                    "c_prev must be float32, float16, bfloat16 or float64, got ",
                    py_dtype(c_prev.scalar_type()));
  TORCH_CHECK_VALUE(c_prev.dim() == 4, "c_prev must be 4-D (B, C_h, H, W), got shape ",
                    py_shape(c_prev.sizes()));
  const std::vector<int64_t> expected{c_prev.size(0), 4 * c_prev.size(1), c_prev.size(2),
                                      c_prev.size(3)};
  TORCH_CHECK_VALUE(gates.sizes() == at::IntArrayRef(expected),
                    "gates must have shape (B, 4*C_h, H, W) = ", py_shape(expected),
                    " for c_prev of shape ", py_shape(c_prev.sizes()),
                    " (channels in the order i, f, g, o), got ", py_shape(gates.sizes()));
  TORCH_CHECK_VALUE(c_prev.scalar_type() == dtype, "c_prev must have the dtype of gates (",
                    py_dtype(dtype), "), got ", py_dtype(c_prev.scalar_type()));
  TORCH_CHECK_VALUE(c_prev.device() == gates.device(), "c_prev is on ", c_prev.device(),
                    " but gates is on ", gates.device());
  TORCH_CHECK_VALUE(dtype != at::kDouble || gates.device().is_cpu(),
                    "float64 gates are supported on the CPU only");
  check_peephole(w_ci, "w_ci", gates, c_prev);
  check_peephole(w_cf, "w_cf", gates, c_prev);
  check_peephole(w_co, "w_co", gates, c_prev);
}

void check_convlstm_state_grads(const std::optional<at::Tensor>& grad_h,
                                const std::optional<at::Tensor>& grad_c, const at::Tensor& c_prev) {
  check_state_grad(grad_h, "grad_h", c_prev);
  check_state_grad(grad_c, "grad_c", c_prev);
}

ConvLstmInputs convlstm_kernel_inputs(const at::Tensor& gates, const at::Tensor& c_prev,
                                      const std::optional<at::Tensor>& w_ci,
                                      const std::optional<at::Tensor>& w_cf,
                                      const std::optional<at::Tensor>& w_co) {
  ConvLstmInputs in;
  in.channels_last = kernel_channels_last(gates);
  const at::MemoryFormat format = kernel_memory_format(in.channels_last);
  in.gates = gates.contiguous(format);
  in.c_prev = c_prev.contiguous(format);
  in.w_ci = peephole_rows(w_ci, c_prev, in.channels_last);
  in.w_cf = peephole_rows(w_cf, c_prev, in.channels_last);
  in.w_co = peephole_rows(w_co, c_prev, in.channels_last);
  const int64_t batch = c_prev.size(0), hidden = c_prev.size(1);
  const int64_t pixels = c_prev.size(2) * c_prev.size(3);
  ConvLstmLayout& l = in.layout;
  l.batch = batch;
  l.gate_batch_stride = 4 * hidden * pixels;
  if (in.channels_last) {
    l.rows = pixels;
    l.cols = hidden;
    l.gate_row_stride = 4 * hidden;
    l.gate_block = hidden;
  } else {
    l.rows = 1;
    l.cols = hidden * pixels;
    l.gate_row_stride = 0;
    l.gate_block = hidden * pixels;
  }
  return in;
}

at::Tensor convlstm_empty_state(const ConvLstmInputs& in, const at::TensorOptions& options) {
  return empty_in_layout(in.c_prev.sizes(), options, in.channels_last);
}

at::Tensor convlstm_empty_gates_like(const ConvLstmInputs& in) {
  return empty_in_layout(in.gates.sizes(), in.gates.options(), in.channels_last);
}

at::Tensor convlstm_peephole_grad(const at::Tensor& row_sums, const at::Tensor& peephole,
                                  bool channels_last) {
  const int64_t hidden = peephole.size(-3), height = peephole.size(-2), width = peephole.size(-1);
  at::Tensor plane = channels_last
                         ? row_sums.view({height, width, hidden}).permute({2, 0, 1}).contiguous()
                         : row_sums.view({hidden, height, width});
  return plane.to(peephole.scalar_type()).reshape(peephole.sizes());
}

}  // namespace tskd_fast
