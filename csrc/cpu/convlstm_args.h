#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "cpu/isa_declare.h"
#include "tskd_fast/convlstm_checks.h"

// Arguments of the CPU ConvLSTM gate kernels and their per-ISA declarations: filled by
// csrc/cpu/convlstm.cpp after the inputs are checked, run by the kernel bodies compiled
// once per vector ISA (csrc/cpu/isa/convlstm_<isa>.cpp). Pointers are into tensors of
// `dtype` in the layout of ConvLstmLayout; absent optional operands are nullptr.
namespace tskd_fast::cpu {

struct ConvLstmGatesArgs {
  ConvLstmLayout layout;
  const void* gates;
  const void* c_prev;
  const void* w_ci;
  const void* w_cf;
  const void* w_co;
  void* h;
  void* c;
  c10::ScalarType dtype;
};

struct ConvLstmGatesBackwardArgs {
  ConvLstmLayout layout;
  const void* grad_h;
  const void* grad_c;
  const void* gates;
  const void* c_prev;
  const void* w_ci;
  const void* w_cf;
  const void* w_co;
  void* grad_gates;
  void* grad_c_prev;
  // (rows, cols) batch sums in the opmath type (float, double for double), or nullptr.
  void* grad_w_ci;
  void* grad_w_cf;
  void* grad_w_co;
  c10::ScalarType dtype;
};

#define TSKD_FAST_DECLARE_CONVLSTM_KERNELS(ISA)                               \
  namespace ISA {                                                             \
  void convlstm_gates_kernel(const ConvLstmGatesArgs& args);                  \
  void convlstm_gates_backward_kernel(const ConvLstmGatesBackwardArgs& args); \
  }

TSKD_FAST_DECLARE_ISA_KERNELS(TSKD_FAST_DECLARE_CONVLSTM_KERNELS)
#undef TSKD_FAST_DECLARE_CONVLSTM_KERNELS

}  // namespace tskd_fast::cpu
