// tskd_fast::abf_fuse and tskd_fast::abf_fuse_backward on CUDA GPUs: input checks, the layout,
// then the kernels of abf_kernels.cuh on the current stream of the inputs' device.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "cuda/abf_kernels.cuh"
#include "cuda/dispatch.cuh"
#include "tskd_fast/abf_checks.h"
#include "tskd_fast/layout.h"

namespace tskd_fast::cuda {
namespace {

// x and y are contiguous in the kernel layout, so their strides are the canonical ones (a size-1
// dimension may report any stride, which must not be read as the pixel stride).
AbfShape abf_shape(const at::Tensor& x, const at::Tensor& y, bool channels_last) {
  AbfShape s{};
  s.n = x.size(0);
  s.m = x.size(1);
  s.h = x.size(2);
  s.w = x.size(3);
  s.yh = y.size(2);
  s.yw = y.size(3);
  const int64_t hw = s.h * s.w, yhw = s.yh * s.yw;
  s.sxn = s.m * hw;
  s.syn = s.m * yhw;
  s.sxc = channels_last ? 1 : hw;
  s.syc = channels_last ? 1 : yhw;
  s.sxp = channels_last ? s.m : 1;
  s.syp = channels_last ? s.m : 1;
  return s;
}

unsigned pixel_blocks(const AbfShape& s) {
  return static_cast<unsigned>((s.n * s.h * s.w + kAbfThreads - 1) / kAbfThreads);
}

std::tuple<at::Tensor, at::Tensor> abf_fuse_cuda(const at::Tensor& x_in, const at::Tensor& y_in,
                                                 const at::Tensor& weight_in,
                                                 const at::Tensor& bias_in) {
  check_abf_fuse_inputs(x_in, y_in, weight_in, bias_in);
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const bool channels_last = kernel_channels_last(x_in);
  const at::Tensor x = in_kernel_layout(x_in, channels_last);
  const at::Tensor y = in_kernel_layout(y_in, channels_last);
  const at::Tensor weight = weight_in.contiguous(), bias = bias_in.contiguous();
  at::Tensor out = empty_in_layout(x.sizes(), x.options(), channels_last);
  const AbfShape s = abf_shape(x, y, channels_last);
  at::Tensor gates = at::empty({s.n, s.h * s.w, 2}, weight.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_logits_dtype(x.scalar_type(), "tskd_fast::abf_fuse", [&](auto tag) {
    using scalar_t = decltype(tag);
    abf_forward_kernel<scalar_t><<<pixel_blocks(s), kAbfThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), weight.const_data_ptr<float>(),
        bias.const_data_ptr<float>(), out.mutable_data_ptr<scalar_t>(),
        gates.mutable_data_ptr<float>(), s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> abf_fuse_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& y_in,
    const at::Tensor& weight_in, const at::Tensor& gates_in) {
  check_abf_fuse_backward_inputs(grad_in, x_in, y_in, weight_in, gates_in);
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const bool channels_last = kernel_channels_last(x_in);
  const at::Tensor x = in_kernel_layout(x_in, channels_last);
  const at::Tensor y = in_kernel_layout(y_in, channels_last);
  const at::Tensor grad = in_kernel_layout(grad_in, channels_last);
  const at::Tensor weight = weight_in.contiguous(), gates = gates_in.contiguous();
  const at::Tensor& xk = x;
  const at::Tensor& yk = y;
  const AbfShape s = abf_shape(x, y, channels_last);
  at::Tensor dx = empty_in_layout(xk.sizes(), xk.options(), channels_last);
  at::Tensor dy_acc = empty_in_layout(yk.sizes(), weight.options(), channels_last).zero_();
  at::Tensor gate_grads = at::empty({s.n, s.h * s.w, 2}, weight.options());
  at::Tensor dweight = at::empty({2, 2 * s.m}, weight.options());
  at::Tensor dbias = at::empty({2}, weight.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_logits_dtype(x.scalar_type(), "tskd_fast::abf_fuse_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    abf_backward_pixels_kernel<scalar_t><<<pixel_blocks(s), kAbfThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), xk.const_data_ptr<scalar_t>(),
        yk.const_data_ptr<scalar_t>(), weight.const_data_ptr<float>(),
        gates.const_data_ptr<float>(), dx.mutable_data_ptr<scalar_t>(),
        dy_acc.mutable_data_ptr<float>(), gate_grads.mutable_data_ptr<float>(), s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    abf_backward_weights_kernel<scalar_t>
        <<<static_cast<unsigned>(4 * s.m + 2), kAbfThreads, 0, stream>>>(
            xk.const_data_ptr<scalar_t>(), yk.const_data_ptr<scalar_t>(),
            gate_grads.const_data_ptr<float>(), dweight.mutable_data_ptr<float>(),
            dbias.mutable_data_ptr<float>(), s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  at::Tensor dy = empty_in_layout(yk.sizes(), yk.options(), channels_last).copy_(dy_acc);
  return {dx, dy, dweight, dbias};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CUDA, m) {
  m.impl("abf_fuse", &abf_fuse_cuda);
  m.impl("abf_fuse_backward", &abf_fuse_backward_cuda);
}

}  // namespace tskd_fast::cuda
