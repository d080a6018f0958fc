#include "tskd_fast/convlstm_checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <vector>

#include "cpu/output_pool.h"

namespace tskd_fast {
namespace {

void check_peephole(const std::optional<at::Tensor>& w, const char* name, const at::Tensor& gates,
                    const at::Tensor& c_prev, const char* op) {
  if (!w.has_value()) return;
  const std::vector<int64_t> plane{c_prev.size(1), c_prev.size(2), c_prev.size(3)};
  const std::vector<int64_t> batched{1, c_prev.size(1), c_prev.size(2), c_prev.size(3)};
  TORCH_CHECK(w->sizes() == at::IntArrayRef(plane) || w->sizes() == at::IntArrayRef(batched), op,
              ": ", name, " must have shape (C_h, H, W) = ", at::IntArrayRef(plane),
              " or (1, C_h, H, W), got ", w->sizes());
  TORCH_CHECK(w->scalar_type() == gates.scalar_type(), op, ": ", name,
              " must have the dtype of gates (", gates.scalar_type(), "), got ", w->scalar_type());
  TORCH_CHECK(w->device() == gates.device(), op, ": ", name, " is on ", w->device(),
              " but gates is on ", gates.device());
}

void check_state_grad(const std::optional<at::Tensor>& grad, const char* name,
                      const at::Tensor& c_prev, const char* op) {
  if (!grad.has_value()) return;
  TORCH_CHECK(grad->sizes() == c_prev.sizes(), op, ": ", name, " must have the shape of c_prev ",
              c_prev.sizes(), ", got ", grad->sizes());
  TORCH_CHECK(grad->scalar_type() == c_prev.scalar_type(), op, ": ", name,
              " must have the dtype of gates (", c_prev.scalar_type(), "), got ",
              grad->scalar_type());
  TORCH_CHECK(grad->device() == c_prev.device(), op, ": ", name, " is on ", grad->device(),
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

at::MemoryFormat format_of(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

}  // namespace

void check_convlstm_gates_inputs(const at::Tensor& gates, const at::Tensor& c_prev,
                                 const std::optional<at::Tensor>& w_ci,
                                 const std::optional<at::Tensor>& w_cf,
                                 const std::optional<at::Tensor>& w_co, const char* op) {
  TORCH_CHECK(c_prev.dim() == 4, op, ": c_prev must be 4-D (B, C_h, H, W), got ", c_prev.dim(),
              "-D with shape ", c_prev.sizes());
  const std::vector<int64_t> expected{c_prev.size(0), 4 * c_prev.size(1), c_prev.size(2),
                                      c_prev.size(3)};
  TORCH_CHECK(gates.sizes() == at::IntArrayRef(expected), op,
              ": gates must have shape (B, 4*C_h, H, W) = ", at::IntArrayRef(expected),
              " for c_prev of shape ", c_prev.sizes(), ", got ", gates.sizes());
  const auto dtype = gates.scalar_type();
  TORCH_CHECK(
      dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
      op, ": gates must be float32, float16, bfloat16 or float64, got ", dtype);
  TORCH_CHECK(c_prev.scalar_type() == dtype, op, ": c_prev must have the dtype of gates (", dtype,
              "), got ", c_prev.scalar_type());
  TORCH_CHECK(c_prev.device() == gates.device(), op, ": c_prev is on ", c_prev.device(),
              " but gates is on ", gates.device());
  TORCH_CHECK(dtype != at::kDouble || gates.device().is_cpu(), op,
              ": float64 gates are supported on the CPU only");
  check_peephole(w_ci, "w_ci", gates, c_prev, op);
  check_peephole(w_cf, "w_cf", gates, c_prev, op);
  check_peephole(w_co, "w_co", gates, c_prev, op);
}

void check_convlstm_state_grads(const std::optional<at::Tensor>& grad_h,
                                const std::optional<at::Tensor>& grad_c, const at::Tensor& c_prev,
                                const char* op) {
  check_state_grad(grad_h, "grad_h", c_prev, op);
  check_state_grad(grad_c, "grad_c", c_prev, op);
}

bool convlstm_channels_last(const at::Tensor& gates) {
  return !gates.is_contiguous() && gates.is_contiguous(at::MemoryFormat::ChannelsLast);
}

ConvLstmInputs convlstm_kernel_inputs(const at::Tensor& gates, const at::Tensor& c_prev,
                                      const std::optional<at::Tensor>& w_ci,
                                      const std::optional<at::Tensor>& w_cf,
                                      const std::optional<at::Tensor>& w_co) {
  ConvLstmInputs in;
  in.channels_last = convlstm_channels_last(gates);
  const at::MemoryFormat format = format_of(in.channels_last);
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
  return cpu::empty_output(in.c_prev.sizes(), options, format_of(in.channels_last));
}

at::Tensor convlstm_state_in_layout(const at::Tensor& t, bool channels_last) {
  return t.contiguous(format_of(channels_last));
}

at::Tensor convlstm_empty_gates_like(const ConvLstmInputs& in) {
  return cpu::empty_output(in.gates.sizes(), in.gates.options(), format_of(in.channels_last));
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
