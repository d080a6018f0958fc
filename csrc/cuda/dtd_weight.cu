// tskd_fast::dtd_weight on CUDA GPUs: input checks, then the kernel of dtd_weight_kernels.cuh
// on the current stream of the inputs' device.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <optional>

#include "cuda/dispatch.cuh"
#include "cuda/dtd_weight_kernels.cuh"
#include "tskd_fast/checks.h"

namespace tskd_fast::cuda {
namespace {

template <typename scalar_t>
void run_dtd_weight(const at::Tensor& student, const at::Tensor& teacher,
                    const std::optional<at::Tensor>& target, at::Tensor& weight, int64_t mode,
                    double gamma, int64_t ka, int64_t ignore_index) {
  DtdParams<scalar_t> p{};
  p.student = student.const_data_ptr<scalar_t>();
  p.teacher = teacher.const_data_ptr<scalar_t>();
  p.student_stride = student.stride(0);
  p.teacher_stride = teacher.stride(0);
  p.target = target.has_value() ? target->const_data_ptr<int64_t>() : nullptr;
  p.weight = weight.mutable_data_ptr<float>();
  p.rows = student.size(0);
  p.classes = student.size(1);
  p.mode = mode;
  p.gamma = static_cast<float>(gamma);
  p.ka = ka;
  p.ignore_index = ignore_index;
  p.aligned = rows_take_packs<scalar_t>(p.student, p.student_stride, p.classes) &&
              rows_take_packs<scalar_t>(p.teacher, p.teacher_stride, p.classes);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  launch_dtd_weight(p, [&](auto kernel, int64_t blocks, int threads) {
    kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor dtd_weight_cuda(const at::Tensor& student_in, const at::Tensor& teacher_in,
                           const std::optional<at::Tensor>& target_in, int64_t mode, double gamma,
                           int64_t ka, int64_t ignore_index) {
  check_dtd_weight_inputs(student_in, teacher_in, target_in, mode, gamma, ka);
  const c10::cuda::CUDAGuard device_guard(student_in.device());
  const auto [student, teacher, target] = kernel_logits(student_in, teacher_in, target_in);
  const int64_t rows = student.size(0);
  TORCH_CHECK(rows <= INT_MAX, "tskd_fast::dtd_weight: at most ", INT_MAX,
              " rows on CUDA, student_logits has ", rows);
  at::Tensor weight = at::empty({rows}, student.options().dtype(at::kFloat));
  dispatch_logits_dtype(student.scalar_type(), "tskd_fast::dtd_weight", [&](auto tag) {
    using scalar_t = decltype(tag);
    run_dtd_weight<scalar_t>(student, teacher, target, weight, mode, gamma, ka, ignore_index);
  });
  return weight;
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CUDA, m) { m.impl("dtd_weight", &dtd_weight_cuda); }

}  // namespace tskd_fast::cuda
