// The ConvLSTM gate kernels compiled for one vector ISA: setup.py and CMakeLists.txt add the
// ISA's compiler flags and CPU_CAPABILITY to files named *_<isa>.cpp.
#include "cpu/convlstm_kernel.h"
