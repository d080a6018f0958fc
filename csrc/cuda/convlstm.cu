// tskd_fast::convlstm_gates and tskd_fast::convlstm_gates_backward on CUDA GPUs: input checks,
// the kernels' layout, then the kernels of convlstm_gates_kernels.cuh on the current stream of
// the inputs' device.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cuda/convlstm_kernels.cuh"
#include "cuda/dispatch.cuh"
#include "tskd_fast/convlstm_checks.h"
#include "tskd_fast/layout.h"

namespace tskd_fast::cuda {
namespace {

template <typename scalar_t>
const scalar_t* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<scalar_t>() : nullptr;
}

// Blocks beyond a few waves only add scheduling: the kernels stride over the rest.
int64_t max_blocks() {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return static_cast<int64_t>(sms) * 8;
}

template <typename scalar_t>
ConvLstmParams<scalar_t> params_of(const ConvLstmInputs& in) {
  ConvLstmParams<scalar_t> p{};
  p.l = in.layout;
  p.gates = in.gates.const_data_ptr<scalar_t>();
  p.c_prev = in.c_prev.const_data_ptr<scalar_t>();
  p.w_ci = data_or_null<scalar_t>(in.w_ci);
  p.w_cf = data_or_null<scalar_t>(in.w_cf);
  p.w_co = data_or_null<scalar_t>(in.w_co);
  return p;
}

template <typename scalar_t>
void launch_on_stream(const ConvLstmParams<scalar_t>& p, bool backward) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t cap = max_blocks();
  auto launch = [&](auto kernel, int64_t items) {
    if (items == 0) return;
    kernel<<<static_cast<unsigned>(convlstm_blocks(items, cap)), kConvLstmThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (backward) {
    launch_convlstm_backward(p, launch);
  } else {
    launch_convlstm_forward(p, launch);
  }
}

std::tuple<at::Tensor, at::Tensor> convlstm_gates_cuda(const at::Tensor& gates,
                                                       const at::Tensor& c_prev,
                                                       const std::optional<at::Tensor>& w_ci,
                                                       const std::optional<at::Tensor>& w_cf,
                                                       const std::optional<at::Tensor>& w_co) {
  const char* op = "tskd_fast::convlstm_gates";
  check_convlstm_gates_inputs(gates, c_prev, w_ci, w_cf, w_co);
  const c10::cuda::CUDAGuard device_guard(gates.device());
  const ConvLstmInputs in = convlstm_kernel_inputs(gates, c_prev, w_ci, w_cf, w_co);
  at::Tensor h = convlstm_empty_state(in, in.c_prev.options());
  at::Tensor c = convlstm_empty_state(in, in.c_prev.options());
  dispatch_logits_dtype(in.gates.scalar_type(), op, [&](auto tag) {
    using scalar_t = decltype(tag);
    ConvLstmParams<scalar_t> p = params_of<scalar_t>(in);
    p.h = h.mutable_data_ptr<scalar_t>();
    p.c = c.mutable_data_ptr<scalar_t>();
    launch_on_stream(p, false);
  });
  return {h, c};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> convlstm_gates_backward_cuda(
    const std::optional<at::Tensor>& grad_h_in, const std::optional<at::Tensor>& grad_c_in,
    const at::Tensor& gates, const at::Tensor& c_prev, const std::optional<at::Tensor>& w_ci,
    const std::optional<at::Tensor>& w_cf, const std::optional<at::Tensor>& w_co,
    bool peephole_grads) {
  const char* op = "tskd_fast::convlstm_gates_backward";
  check_convlstm_gates_inputs(gates, c_prev, w_ci, w_cf, w_co);
  check_convlstm_state_grads(grad_h_in, grad_c_in, c_prev);
  const c10::cuda::CUDAGuard device_guard(gates.device());
  const ConvLstmInputs in = convlstm_kernel_inputs(gates, c_prev, w_ci, w_cf, w_co);
  std::optional<at::Tensor> grad_h, grad_c;
  if (grad_h_in.has_value()) grad_h = in_kernel_layout(*grad_h_in, in.channels_last);
  if (grad_c_in.has_value()) grad_c = in_kernel_layout(*grad_c_in, in.channels_last);
  at::Tensor grad_gates = convlstm_empty_gates_like(in);
  at::Tensor grad_c_prev = convlstm_empty_state(in, in.c_prev.options());
  auto sums_for = [&](const std::optional<at::Tensor>& w) -> std::optional<at::Tensor> {
    if (!peephole_grads || !w.has_value()) return std::nullopt;
    return at::empty({in.layout.rows, in.layout.cols}, in.c_prev.options().dtype(at::kFloat));
  };
  const std::optional<at::Tensor> sum_ci = sums_for(in.w_ci), sum_cf = sums_for(in.w_cf),
                                  sum_co = sums_for(in.w_co);
  auto sum_ptr = [](const std::optional<at::Tensor>& s) {
    return s.has_value() ? s->mutable_data_ptr<float>() : nullptr;
  };
  dispatch_logits_dtype(in.gates.scalar_type(), op, [&](auto tag) {
    using scalar_t = decltype(tag);
    ConvLstmParams<scalar_t> p = params_of<scalar_t>(in);
    p.grad_h = data_or_null<scalar_t>(grad_h);
    p.grad_c = data_or_null<scalar_t>(grad_c);
    p.grad_gates = grad_gates.mutable_data_ptr<scalar_t>();
    p.grad_c_prev = grad_c_prev.mutable_data_ptr<scalar_t>();
    p.sum_ci = sum_ptr(sum_ci);
    p.sum_cf = sum_ptr(sum_cf);
    p.sum_co = sum_ptr(sum_co);
    launch_on_stream(p, true);
  });
  auto peephole_grad = [&](const std::optional<at::Tensor>& sums,
                           const std::optional<at::Tensor>& w) {
    return sums.has_value() ? convlstm_peephole_grad(*sums, *w, in.channels_last)
                            : at::empty({0}, gates.options());
  };
  return {grad_gates, grad_c_prev, peephole_grad(sum_ci, w_ci), peephole_grad(sum_cf, w_cf),
          peephole_grad(sum_co, w_co)};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CUDA, m) {
  m.impl("convlstm_gates", &convlstm_gates_cuda);
  m.impl("convlstm_gates_backward", &convlstm_gates_backward_cuda);
}

}  // namespace tskd_fast::cuda
