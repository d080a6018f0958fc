#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "cpu/isa_declare.h"

// Arguments of the CPU KD-loss kernel (csrc/cpu/kd_loss_kernel.h) and its per-ISA declarations:
// filled by csrc/cpu/kd_loss.cpp after the inputs are checked, run by the kernel body compiled
// once per vector ISA (csrc/cpu/isa/kd_loss_<isa>.cpp).
namespace tskd_fast::cpu {

struct KdLossArgs {
  const void* student;  // (rows, classes) of `dtype`, unit stride along classes
  const void* teacher;  // likewise
  int64_t student_row_stride;
  int64_t teacher_row_stride;
  const int64_t* target;    // (rows,) or nullptr
  const void* temperature;  // (rows,) of the opmath type (float, double for double logits)
  void* row_loss;           // (rows,) of the opmath type
  void* row_grad;           // (rows, classes) contiguous of `dtype`, or nullptr
  int64_t rows;
  int64_t classes;
  int64_t ka;
  double lsr_p;
  bool scale_tau2;
  double ce_weight;
  int64_t ignore_index;
  double grad_scale;  // factor of the written gradient (1/B for batchmean)
  c10::ScalarType dtype;
};

#define TSKD_FAST_DECLARE_KD_LOSS_KERNEL(ISA)  \
  namespace ISA {                              \
  void kd_loss_kernel(const KdLossArgs& args); \
  }
TSKD_FAST_DECLARE_ISA_KERNELS(TSKD_FAST_DECLARE_KD_LOSS_KERNEL)
#undef TSKD_FAST_DECLARE_KD_LOSS_KERNEL

}  // namespace tskd_fast::cpu
