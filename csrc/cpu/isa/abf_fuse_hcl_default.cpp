// The ReviewKD CPU kernel bodies (ABF fusion and HCL) compiled for one vector ISA: setup.py and
// CMakeLists.txt add the ISA's compiler flags and CPU_CAPABILITY to files named *_<isa>.cpp.
#include "cpu/abf_fuse_kernel.h"
#include "cpu/hcl_kernel.h"
