// tskd_fast::kd_loss on CUDA GPUs: input checks, the kernels of kd_loss_kernels.cuh on the
// current stream of the inputs' device, then the reduction of the per-row losses (on the device,
// no host sync).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mean.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <optional>
#include <tuple>

#include "cuda/dispatch.cuh"
#include "cuda/kd_loss_kernels.cuh"
#include "tskd_fast/kd_loss_checks.h"
#include "tskd_fast/logits_checks.h"

namespace tskd_fast::cuda {
namespace {

template <typename scalar_t>
void run_kd_loss(const at::Tensor& student, const at::Tensor& teacher,
                 const std::optional<at::Tensor>& target, const at::Tensor& temperature,
                 at::Tensor& row_loss, at::Tensor& row_grad, bool compute_grad, int64_t ka,
                 double lsr_p, bool scale_tau2, double ce_weight, int64_t ignore_index,
                 double grad_scale) {
  KdParams<scalar_t> p{};
  p.student = student.const_data_ptr<scalar_t>();
  p.teacher = teacher.const_data_ptr<scalar_t>();
  p.student_stride = student.stride(0);
  p.teacher_stride = teacher.stride(0);
  p.target = target.has_value() ? target->const_data_ptr<int64_t>() : nullptr;
  p.temperature = temperature.const_data_ptr<float>();
  p.row_loss = row_loss.mutable_data_ptr<float>();
  p.row_grad = compute_grad ? row_grad.mutable_data_ptr<scalar_t>() : nullptr;
  p.rows = student.size(0);
  p.classes = student.size(1);
  p.ka = ka;
  p.ignore_index = ignore_index;
  p.smoothed = smoothed_target<float>(static_cast<float>(lsr_p), p.classes);
  p.ce_weight = static_cast<float>(ce_weight);
  p.grad_scale = static_cast<float>(grad_scale);
  p.scale_tau2 = scale_tau2;
  p.aligned =
      rows_take_packs<scalar_t>(p.student, p.student_stride, p.classes) &&
      rows_take_packs<scalar_t>(p.teacher, p.teacher_stride, p.classes) &&
      (p.row_grad == nullptr || rows_take_packs<scalar_t>(p.row_grad, p.classes, p.classes));
  p.need_argmax = p.target != nullptr && ka != kKaNone;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  launch_kd_loss(p, [&](auto kernel, int64_t blocks, int threads) {
    kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> kd_loss_cuda(const at::Tensor& student_in,
                                                const at::Tensor& teacher_in,
                                                const std::optional<at::Tensor>& target_in,
                                                const at::Tensor& temperature_in, int64_t ka,
                                                double lsr_p, bool scale_tau2, double ce_weight,
                                                int64_t ignore_index, bool compute_grad,
                                                double grad_scale, int64_t reduction) {
  check_kd_loss_inputs(student_in, teacher_in, target_in, temperature_in, ka, lsr_p, ce_weight,
                       grad_scale, reduction);
  const c10::cuda::CUDAGuard device_guard(student_in.device());
  const auto [student, teacher, target] = kernel_logits(student_in, teacher_in, target_in);
  const at::Tensor temperature = temperature_in.contiguous();
  const int64_t rows = student.size(0), classes = student.size(1);
  // One block per row at most (long rows), and in-row column arithmetic in 64 bits.
  TORCH_CHECK_VALUE(rows <= INT_MAX, "student_logits has ", rows, " rows, CUDA takes at most ",
                    INT_MAX);
  at::Tensor row_loss = at::empty({rows}, temperature.options());
  at::Tensor row_grad = compute_grad ? at::empty({rows, classes}, student.options())
                                     : at::empty({0}, student.options());
  dispatch_logits_dtype(student.scalar_type(), "tskd_fast::kd_loss", [&](auto tag) {
    using scalar_t = decltype(tag);
    run_kd_loss<scalar_t>(student, teacher, target, temperature, row_loss, row_grad, compute_grad,
                          ka, lsr_p, scale_tau2, ce_weight, ignore_index, grad_scale);
  });
  if (reduction == kKdReduceSum) return {at::sum(row_loss), row_grad};
  if (reduction == kKdReduceMean) return {at::mean(row_loss), row_grad};
  return {row_loss, row_grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CUDA, m) { m.impl("kd_loss", &kd_loss_cuda); }

}  // namespace tskd_fast::cuda
