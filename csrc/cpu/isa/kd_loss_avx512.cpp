// The KD-loss CPU kernel compiled for one vector ISA: setup.py and CMakeLists.txt add the ISA's
// compiler flags and CPU_CAPABILITY to files named *_<isa>.cpp.
#include "cpu/kd_loss_kernel.h"
