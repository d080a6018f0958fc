#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "tskd_fast/convlstm_layout.h"

// Input checks and kernel layout of the ConvLSTM gate ops (tskd_fast::convlstm_gates and
// convlstm_gates_backward), shared by the CPU and CUDA implementations (the Python twin:
// tskd_fast/ops/convlstm.py). The layout is the rule of tskd_fast/layout.h, read from gates.
namespace tskd_fast {

// The checked inputs in the layout the kernels read (copies only where the strides differ).
struct ConvLstmInputs {
  bool channels_last;
  ConvLstmLayout layout;
  at::Tensor gates;
  at::Tensor c_prev;
  std::optional<at::Tensor> w_ci, w_cf, w_co;  // (rows, cols) contiguous
};

// gates (B, 4 C_h, H, W) and c_prev (B, C_h, H, W) of one floating dtype (float64 on the CPU
// only) and device; peepholes absent or (C_h, H, W) / (1, C_h, H, W) of that dtype and device.
void check_convlstm_gates_inputs(const at::Tensor& gates, const at::Tensor& c_prev,
                                 const std::optional<at::Tensor>& w_ci,
                                 const std::optional<at::Tensor>& w_cf,
                                 const std::optional<at::Tensor>& w_co);

// grad_h and grad_c, when present: the shape, dtype and device of c_prev.
void check_convlstm_state_grads(const std::optional<at::Tensor>& grad_h,
                                const std::optional<at::Tensor>& grad_c, const at::Tensor& c_prev);

ConvLstmInputs convlstm_kernel_inputs(const at::Tensor& gates, const at::Tensor& c_prev,
                                      const std::optional<at::Tensor>& w_ci,
                                      const std::optional<at::Tensor>& w_cf,
                                      const std::optional<at::Tensor>& w_co);

// New state-shaped (B, C_h, H, W) and gates-shaped tensors in the kernels' layout.
at::Tensor convlstm_empty_state(const ConvLstmInputs& in, const at::TensorOptions& options);
at::Tensor convlstm_empty_gates_like(const ConvLstmInputs& in);

// A peephole gradient from the kernels' (rows, cols) sums in the opmath type: contiguous, of
// the peephole's shape and dtype.
at::Tensor convlstm_peephole_grad(const at::Tensor& row_sums, const at::Tensor& peephole,
                                  bool channels_last);

}  // namespace tskd_fast
