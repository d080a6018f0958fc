// tskd_fast::dtd_weight and tskd_fast::dtd_temperature on CUDA GPUs: input checks, the kernel of
// dtd_kernels.cuh on the current stream of the inputs' device, then (dtd_temperature) the
// temperatures from the weights in device ops.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <optional>

#include "cuda/dispatch.cuh"
#include "cuda/dtd_kernels.cuh"
#include "tskd_fast/dtd_checks.h"
#include "tskd_fast/logits_checks.h"

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

// The kernel on checked inputs.
at::Tensor weights(const at::Tensor& student_in, const at::Tensor& teacher_in,
                   const std::optional<at::Tensor>& target_in, int64_t mode, double gamma,
                   int64_t ka, int64_t ignore_index) {
  const c10::cuda::CUDAGuard device_guard(student_in.device());
  const auto [student, teacher, target] = kernel_logits(student_in, teacher_in, target_in);
  const int64_t rows = student.size(0);
  TORCH_CHECK_VALUE(rows <= INT_MAX, "student_logits has ", rows, " rows, CUDA takes at most ",
                    INT_MAX);
  at::Tensor weight = at::empty({rows}, student.options().dtype(at::kFloat));
  dispatch_logits_dtype(student.scalar_type(), "tskd_fast::dtd_weight", [&](auto tag) {
    using scalar_t = decltype(tag);
    run_dtd_weight<scalar_t>(student, teacher, target, weight, mode, gamma, ka, ignore_index);
  });
  return weight;
}

at::Tensor dtd_weight_cuda(const at::Tensor& student, const at::Tensor& teacher,
                           const std::optional<at::Tensor>& target, int64_t mode, double gamma,
                           int64_t ka, int64_t ignore_index) {
  check_dtd_weight_inputs(student, teacher, target, mode, gamma, ka);
  return weights(student, teacher, target, mode, gamma, ka, ignore_index);
}

at::Tensor dtd_temperature_cuda(const at::Tensor& student, const at::Tensor& teacher,
                                const std::optional<at::Tensor>& target, int64_t mode, double gamma,
                                int64_t ka, int64_t ignore_index, double t0, double beta,
                                double min_temperature) {
  check_dtd_temperature_inputs(student, teacher, target, mode, gamma, ka, t0, beta,
                               min_temperature);
  const at::Tensor weight = weights(student, teacher, target, mode, gamma, ka, ignore_index);
  const c10::cuda::CUDAGuard device_guard(student.device());
  return temperatures_from_weights(weight, t0, beta, min_temperature);
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CUDA, m) {
  m.impl("dtd_weight", &dtd_weight_cuda);
  m.impl("dtd_temperature", &dtd_temperature_cuda);
}

}  // namespace tskd_fast::cuda
