#pragma once

#include <ATen/core/Tensor.h>

// Input checks of tskd_fast::abf_fuse and tskd_fast::abf_fuse_backward, shared by the CPU and
// CUDA implementations (the Python twin: tskd_fast/ops/abf.py).
namespace tskd_fast {

// x (N, M, h, w) and y (N, M, yh, yw) feature maps of one kernel dtype (float64 on the CPU only),
// yh <= h, yw <= w; weight (2, 2M) and bias (2,) of the opmath type (float32, float64 for float64
// maps); all on one device.
void check_abf_fuse_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight,
                           const at::Tensor& bias);
// x, y and weight as above; grad like x; gates (N, h * w, 2) of the opmath type.
void check_abf_fuse_backward_inputs(const at::Tensor& grad, const at::Tensor& x,
                                    const at::Tensor& y, const at::Tensor& weight,
                                    const at::Tensor& gates);

}  // namespace tskd_fast
