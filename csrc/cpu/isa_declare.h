#pragma once

// Each CPU kernel body is compiled once per vector ISA (csrc/cpu/isa/<family>_<isa>.cpp, into
// namespace tskd_fast::cpu::<ISA>); a family's cpu/<family>_args.h declares its kernels for every
// ISA this build compiles with
//   #define DECLARE(ISA) namespace ISA { void kernel(const Args&); }
//   TSKD_FAST_DECLARE_ISA_KERNELS(DECLARE)
// and its dispatcher (cpu/<family>.cpp) calls the one the machine runs through TSKD_FAST_CALL_ISA
// (cpu/isa_dispatch.h). This header holds declarations only, so that the ISA files can include
// it: an inline function defined here would be compiled with each ISA's flags.
#if TSKD_FAST_X86_ISA
#define TSKD_FAST_DECLARE_ISA_KERNELS(DECLARE) \
  DECLARE(DEFAULT)                             \
  DECLARE(AVX2)                                \
  DECLARE(AVX512)
#else
#define TSKD_FAST_DECLARE_ISA_KERNELS(DECLARE) DECLARE(DEFAULT)
#endif
