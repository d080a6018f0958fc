#pragma once

#include <ATen/Context.h>

#include <string>

#include "cpu/kernel_args.h"

// The kernels of each vector ISA (csrc/cpu/isa/kernels_<isa>.cpp) and the choice between them.
namespace tskd_fast::cpu {

#define TSKD_FAST_DECLARE_ISA_KERNELS(ISA)           \
  namespace ISA {                                    \
  void kd_loss_kernel(const KdLossArgs& args);       \
  void dtd_weight_kernel(const DtdWeightArgs& args); \
  }

TSKD_FAST_DECLARE_ISA_KERNELS(DEFAULT)
#if TSKD_FAST_X86_ISA
TSKD_FAST_DECLARE_ISA_KERNELS(AVX2)
TSKD_FAST_DECLARE_ISA_KERNELS(AVX512)
#endif
#undef TSKD_FAST_DECLARE_ISA_KERNELS

enum class Isa { kDefault, kAvx2, kAvx512 };

// The ISA ATen itself runs at (honours ATEN_CPU_CAPABILITY), read once.
inline Isa runtime_isa() {
  static const Isa isa = [] {
#if TSKD_FAST_X86_ISA
    const std::string cap = at::get_cpu_capability();
    if (cap == "AVX512") return Isa::kAvx512;
    if (cap == "AVX2") return Isa::kAvx2;
#endif
    return Isa::kDefault;
  }();
  return isa;
}

#if TSKD_FAST_X86_ISA
#define TSKD_FAST_CALL_ISA(kernel, args)       \
  switch (::tskd_fast::cpu::runtime_isa()) {   \
    case ::tskd_fast::cpu::Isa::kAvx512:       \
      ::tskd_fast::cpu::AVX512::kernel(args);  \
      break;                                   \
    case ::tskd_fast::cpu::Isa::kAvx2:         \
      ::tskd_fast::cpu::AVX2::kernel(args);    \
      break;                                   \
    default:                                   \
      ::tskd_fast::cpu::DEFAULT::kernel(args); \
  }
#else
#define TSKD_FAST_CALL_ISA(kernel, args) ::tskd_fast::cpu::DEFAULT::kernel(args)
#endif

}  // namespace tskd_fast::cpu
