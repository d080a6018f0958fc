// tskd_fast::hcl_loss on CUDA GPUs: input checks, then per stage pair the included levels and
// their windows, the kernel of hcl_kernels.cuh on the current stream, and the per-plane terms
// summed in order; the pairs' losses are summed on the device (no host sync).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "cuda/dispatch.cuh"
#include "cuda/hcl_kernels.cuh"
#include "tskd_fast/checks.h"
#include "tskd_fast/hcl_checks.h"
#include "tskd_fast/layout.h"

namespace tskd_fast::cuda {
namespace {

// The loss of one stage pair (0-d double on the device), and its gradient into `grad`.
at::Tensor hcl_pair(const at::Tensor& student_in, const at::Tensor& teacher_in,
                    at::IntArrayRef levels, bool compute_grad, double grad_scale,
                    at::Tensor& grad) {
  const char* op = "tskd_fast::hcl_loss";
  const bool channels_last = kernel_channels_last(student_in);
  const at::Tensor student = in_kernel_layout(student_in, channels_last);
  const at::Tensor teacher = in_kernel_layout(teacher_in, channels_last);
  const int64_t n = student.size(0), c = student.size(1);
  HclPlaneParams q{};
  q.c = c;
  q.h = student.size(2);
  q.w = student.size(3);
  q.levels = hcl_levels(levels.data(), static_cast<int>(levels.size()), q.h);
  for (int k = 0; k < q.levels.count; ++k) {
    q.offset[k] = q.windows;
    q.windows += q.levels.size[k] * q.levels.size[k];
  }
  TORCH_CHECK_VALUE(q.windows <= kHclMaxWindows, "levels ", py_shape(levels), " give ", q.windows,
                    " pooling windows (the sum of l^2 over the included levels), CUDA takes at "
                    "most ",
                    kHclMaxWindows);
  const double norm = q.levels.tot * static_cast<double>(n) * static_cast<double>(c);
  q.grad_factor = static_cast<float>(grad_scale * 2.0 / norm);
  grad = compute_grad ? empty_in_layout(student.sizes(), student.options(), channels_last)
                      : at::empty({0}, student.options());
  q.sfn = student.stride(0);
  q.sfc = student.stride(1);
  q.sfh = student.stride(2);
  q.sfw = student.stride(3);
  q.stn = teacher.stride(0);
  q.stc = teacher.stride(1);
  q.sth = teacher.stride(2);
  q.stw = teacher.stride(3);
  if (compute_grad) {
    q.sgn = grad.stride(0);
    q.sgc = grad.stride(1);
    q.sgh = grad.stride(2);
    q.sgw = grad.stride(3);
  }
  const auto opmath = student.options().dtype(at::kFloat);
  at::Tensor planes = at::empty({n * c}, opmath);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_logits_dtype(student.scalar_type(), op, [&](auto tag) {
    using scalar_t = decltype(tag);
    hcl_plane_kernel<scalar_t><<<static_cast<unsigned>(n * c), kHclThreads, 0, stream>>>(
        student.const_data_ptr<scalar_t>(), teacher.const_data_ptr<scalar_t>(),
        compute_grad ? grad.mutable_data_ptr<scalar_t>() : nullptr,
        planes.mutable_data_ptr<float>(), q);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return planes.sum(at::kDouble).div(norm);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> hcl_loss_cuda(at::TensorList student_feats,
                                                              at::TensorList teacher_feats,
                                                              at::IntArrayRef levels,
                                                              const c10::List<bool>& compute_grad,
                                                              double grad_scale) {
  check_hcl_inputs(student_feats, teacher_feats, levels, compute_grad, grad_scale);
  const c10::cuda::CUDAGuard device_guard(student_feats[0].device());
  std::vector<at::Tensor> grads(student_feats.size());
  at::Tensor loss;
  for (size_t i = 0; i < student_feats.size(); ++i) {
    const at::Tensor pair = hcl_pair(student_feats[i], teacher_feats[i], levels,
                                     compute_grad.get(i), grad_scale, grads[i]);
    loss = i == 0 ? pair : loss + pair;
  }
  return {loss.to(at::kFloat), grads};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CUDA, m) { m.impl("hcl_loss", &hcl_loss_cuda); }

}  // namespace tskd_fast::cuda
