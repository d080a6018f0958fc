#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>
#include <c10/core/TensorOptions.h>

namespace tskd_fast::cpu {

// A new tensor for a kernel output (the layout of `format`). On the CPU, outputs of at least
// kPooledOutputBytes come from a small pool of blocks that earlier outputs released, instead of
// fresh memory from the system: glibc maps every allocation of 32 MiB or more anew and unmaps it
// on free, so each call would fault in and zero every page first, which at large outputs costs
// several times the kernel (benchmarks/README.md, "Kernel design measurements"). Blocks are 2 MiB
// aligned and advised for transparent huge pages; the pool keeps at most kPooledCacheBytes of
// released blocks and reports its allocations to PyTorch's memory profiler. Other outputs, and
// every non-CPU one, come from at::empty.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options,
                        at::MemoryFormat format = at::MemoryFormat::Contiguous);

constexpr size_t kPooledOutputBytes = size_t(4) << 20;
constexpr size_t kPooledCacheBytes = size_t(1) << 30;

// Bytes the pool holds in released blocks, and release_pooled_outputs() returning them all to
// the system (it gives how many): torch.ops.tskd_fast.output_pool_cached_bytes and
// release_output_pool.
int64_t output_pool_cached_bytes();
int64_t release_pooled_outputs();

}  // namespace tskd_fast::cpu
