#pragma once

#include <ATen/core/Tensor.h>

// Input checks and layout choice of the ReviewKD ops (abf_fuse, abf_fuse_backward, hcl_loss),
// shared by the CPU and CUDA implementations so that every backend rejects the same inputs with
// the same messages.
namespace tskd_fast {

// The kernels read NCHW-contiguous or NHWC-contiguous (channels_last) maps: a map takes the NHWC
// kernels when it is channels_last-contiguous and not NCHW-contiguous (an (N, C, 1, 1) map is
// both and goes NCHW). The other inputs of the op are brought to that layout.
bool kernel_channels_last(const at::Tensor& map);
at::Tensor in_kernel_layout(const at::Tensor& t, bool channels_last);
at::Tensor empty_in_layout(at::IntArrayRef sizes, const at::TensorOptions& options,
                           bool channels_last);

// x (N, M, h, w) and y (N, M, yh, yw) feature maps of one floating dtype (float64 on the CPU
// only), yh <= h, yw <= w; weight (2, 2M) and bias (2,) of the opmath type (float32, float64 for
// float64 maps); all on one device.
void check_abf_fuse_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight,
                           const at::Tensor& bias, const char* op);
// grad like x; gates (N, h * w, 2) of the opmath type.
void check_abf_fuse_backward_inputs(const at::Tensor& grad, const at::Tensor& x,
                                    const at::Tensor& y, const at::Tensor& weight,
                                    const at::Tensor& gates, const char* op);
// student and teacher (N, C, H, W) of one shape, dtype and device; levels >= 1, at most
// kHclMaxLevels of them; grad_scale finite.
void check_hcl_inputs(const at::Tensor& student, const at::Tensor& teacher, at::IntArrayRef levels,
                      double grad_scale, const char* op);

}  // namespace tskd_fast
