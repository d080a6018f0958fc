#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "cpu/isa_declare.h"

// Arguments of the CPU row kernel of the fused linear + KD loss (tskd_fast/fused_linear_kd_math.h
// states its contract), filled by csrc/cpu/fused_linear_kd.cpp after the checks; the kernel is
// compiled once per vector ISA (csrc/cpu/isa/fused_linear_kd_<isa>.cpp).
namespace tskd_fast::cpu {

struct FlkdRowsArgs {
  void* student;  // (rows, classes) of `dtype`, unit column stride; the gradient is written here
  int64_t student_row_stride;
  const void* teacher;  // (rows, classes) of `dtype`, unit column stride, or nullptr (top-k)
  int64_t teacher_row_stride;
  const int64_t* topk_ids;    // (rows, topk) contiguous, or nullptr
  const void* topk_logprobs;  // (rows, topk) contiguous, of the opmath type
  int64_t topk;
  const int64_t* target;    // (rows,) or nullptr
  const void* temperature;  // (rows,) of the opmath type
  void* row_loss;           // (rows,) of the opmath type
  int64_t rows;
  int64_t classes;
  int64_t divergence;
  double beta;
  int64_t ka;
  double lsr_p;
  bool scale_tau2;
  double ce_weight;
  int64_t ignore_index;
  bool compute_grad;
  double grad_scale;
  c10::ScalarType dtype;
};

#define TSKD_FAST_DECLARE_FLKD_KERNEL(ISA)                    \
  namespace ISA {                                             \
  void fused_linear_kd_rows_kernel(const FlkdRowsArgs& args); \
  }
TSKD_FAST_DECLARE_ISA_KERNELS(TSKD_FAST_DECLARE_FLKD_KERNEL)
#undef TSKD_FAST_DECLARE_FLKD_KERNEL

}  // namespace tskd_fast::cpu
