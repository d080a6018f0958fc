// The fused linear + KD row kernel compiled for one vector ISA: setup.py and CMakeLists.txt add
// the ISA's compiler flags and CPU_CAPABILITY to files named *_<isa>.cpp.
#include "cpu/fused_linear_kd_kernel.h"
