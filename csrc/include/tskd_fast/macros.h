#pragma once

// Functions in csrc/include/tskd_fast/ are the single source of the math shared by the CPU and
// CUDA kernels: compiled for the host in the CPU build (and so tested there) and for the device
// by nvcc.
#if defined(__CUDACC__)
#define TSKD_HD __host__ __device__ __forceinline__
#else
#define TSKD_HD inline
#endif
