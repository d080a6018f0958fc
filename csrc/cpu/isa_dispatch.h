#pragma once

#include <ATen/Version.h>

#include <string>

// The choice between the vector ISAs each CPU kernel body is compiled for (cpu/isa_declare.h).
// Included by the dispatchers (cpu/<family>.cpp) only, never by the ISA files: the inline
// function below must be compiled without ISA flags.
namespace tskd_fast::cpu {

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
