#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "cpu/isa_declare.h"

// Arguments of the CPU DTD-weight kernel (csrc/cpu/dtd_kernel.h) and its per-ISA declarations:
// filled by csrc/cpu/dtd.cpp after the inputs are checked, run by the kernel body compiled once
// per vector ISA (csrc/cpu/isa/dtd_<isa>.cpp).
namespace tskd_fast::cpu {

struct DtdWeightArgs {
  const void* student;
  const void* teacher;
  int64_t student_row_stride;
  int64_t teacher_row_stride;
  const int64_t* target;  // (rows,) or nullptr
  void* weight;           // (rows,) of the opmath type
  int64_t rows;
  int64_t classes;
  int64_t mode;  // 0 flsw, 1 cwsm
  double gamma;
  int64_t ka;
  int64_t ignore_index;
  c10::ScalarType dtype;
};

#define TSKD_FAST_DECLARE_DTD_KERNEL(ISA)            \
  namespace ISA {                                    \
  void dtd_weight_kernel(const DtdWeightArgs& args); \
  }
TSKD_FAST_DECLARE_ISA_KERNELS(TSKD_FAST_DECLARE_DTD_KERNEL)
#undef TSKD_FAST_DECLARE_DTD_KERNEL

}  // namespace tskd_fast::cpu
