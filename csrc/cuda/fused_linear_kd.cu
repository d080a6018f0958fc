// tskd_fast::fused_linear_kd_rows on CUDA GPUs: the shared input checks, the row kernel of
// fused_linear_kd_kernels.cuh on the current stream of the inputs' device. Nothing here reads
// device memory on the host: labels, temperatures and top-k ids are checked by device asserts,
// so the driver's chunk loop never synchronises.
#include <ATen/core/Tensor.h>
#include <ATen/ops/_assert_async.h>
#include <ATen/ops/any.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <optional>

#include "cuda/dispatch.cuh"
#include "cuda/fused_linear_kd_kernels.cuh"
#include "tskd_fast/fused_linear_kd_checks.h"
#include "tskd_fast/logits_checks.h"

namespace tskd_fast::cuda {
namespace {

// Every top-k id in [0, classes) and none twice in a row (the CPU op's check_topk_ids_on_host),
// asserted on the device: sorting the (rows, K) ids costs little next to the (rows, V) logits,
// and nothing waits for the answer. The kernel asserts the range again where it reads.
void assert_topk_ids(const at::Tensor& ids, int64_t classes) {
  const int64_t k = ids.size(1);
  if (ids.size(0) == 0) return;
  at::Tensor bad = ids.lt(0).logical_or(ids.ge(classes)).any();
  if (k > 1) {
    const at::Tensor sorted = std::get<0>(ids.sort(1));
    bad = bad.logical_or(sorted.slice(1, 1, k).eq(sorted.slice(1, 0, k - 1)).any());
  }
  at::_assert_async(bad.logical_not(),
                    "tskd_fast::fused_linear_kd_rows: topk_ids must be in [0, classes) and list "
                    "no id twice in a row");
}

template <typename scalar_t>
void run_rows(at::Tensor& student, const std::optional<at::Tensor>& teacher,
              const std::optional<at::Tensor>& topk_ids,
              const std::optional<at::Tensor>& topk_logprobs, const at::Tensor& topk_student,
              const std::optional<at::Tensor>& target, const at::Tensor& temperature,
              at::Tensor& row_loss, const FlkdOptions<float>& options, bool compute_grad) {
  FlkdParams<scalar_t> p{};
  p.student = student.mutable_data_ptr<scalar_t>();
  p.student_stride = student.stride(0);
  p.teacher = teacher.has_value() ? teacher->const_data_ptr<scalar_t>() : nullptr;
  p.teacher_stride = teacher.has_value() ? teacher->stride(0) : 0;
  p.topk_ids = topk_ids.has_value() ? topk_ids->const_data_ptr<int64_t>() : nullptr;
  p.topk_logprobs = topk_ids.has_value() ? topk_logprobs->const_data_ptr<float>() : nullptr;
  p.topk_student = topk_ids.has_value() ? topk_student.mutable_data_ptr<float>() : nullptr;
  p.topk = topk_ids.has_value() ? topk_ids->size(1) : 0;
  p.target = target.has_value() ? target->const_data_ptr<int64_t>() : nullptr;
  p.temperature = temperature.const_data_ptr<float>();
  p.row_loss = row_loss.mutable_data_ptr<float>();
  p.rows = student.size(0);
  p.classes = student.size(1);
  p.options = options;
  p.compute_grad = compute_grad;
  p.aligned =
      rows_take_packs<scalar_t>(p.student, p.student_stride, p.classes) &&
      (p.teacher == nullptr || rows_take_packs<scalar_t>(p.teacher, p.teacher_stride, p.classes));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  launch_fused_linear_kd_rows(p, [&](auto kernel, int64_t blocks, int threads) {
    kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor fused_linear_kd_rows_cuda(
    at::Tensor& student, const std::optional<at::Tensor>& teacher_in,
    const std::optional<at::Tensor>& topk_ids_in, const std::optional<at::Tensor>& topk_logprobs_in,
    const std::optional<at::Tensor>& target_in, const at::Tensor& temperature_in,
    int64_t divergence, double beta, int64_t ka, double lsr_p, bool scale_tau2, double ce_weight,
    int64_t ignore_index, bool compute_grad, double grad_scale) {
  check_fused_linear_kd_rows_inputs(student, teacher_in, topk_ids_in, topk_logprobs_in, target_in,
                                    temperature_in, divergence, beta, ka, lsr_p, ce_weight,
                                    grad_scale);
  const c10::cuda::CUDAGuard device_guard(student.device());
  const int64_t rows = student.size(0), classes = student.size(1);
  // One block per row.
  TORCH_CHECK_VALUE(rows <= INT_MAX, "student_logits has ", rows, " rows, CUDA takes at most ",
                    INT_MAX);
  std::optional<at::Tensor> teacher, topk_ids, topk_logprobs, target;
  if (teacher_in.has_value()) teacher = with_unit_class_stride(*teacher_in);
  if (target_in.has_value()) target = target_in->contiguous();
  at::Tensor topk_student;
  if (topk_ids_in.has_value()) {
    topk_ids = topk_ids_in->contiguous();
    topk_logprobs = topk_logprobs_in->contiguous();
    topk_student = at::empty(topk_ids->sizes(), temperature_in.options());
    assert_topk_ids(*topk_ids, classes);
  }
  const at::Tensor temperature = temperature_in.contiguous();
  at::Tensor row_loss = at::empty({rows}, temperature.options());
  if (rows == 0) return row_loss;
  const FlkdOptions<float> options = flkd_options<float>(
      divergence, static_cast<float>(beta), ka, static_cast<float>(lsr_p), scale_tau2,
      static_cast<float>(ce_weight), ignore_index, static_cast<float>(grad_scale), classes);
  dispatch_logits_dtype(student.scalar_type(), "tskd_fast::fused_linear_kd_rows", [&](auto tag) {
    using scalar_t = decltype(tag);
    run_rows<scalar_t>(student, teacher, topk_ids, topk_logprobs, topk_student, target, temperature,
                       row_loss, options, compute_grad);
  });
  return row_loss;
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CUDA, m) {
  m.impl("fused_linear_kd_rows", &fused_linear_kd_rows_cuda);
}

}  // namespace tskd_fast::cuda
