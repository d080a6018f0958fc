#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace tskd_fast::cpu {

// A large output that a kernel writes once is freshly mapped memory: with 4 KiB pages its first
// touch faults once per page (and the kernel zeroes every page), which at (1024, 32000) costs
// about as much as the KD-loss kernel itself. Asking for transparent huge pages on the untouched
// buffer cuts the faults 512-fold. Best effort: no effect where THP is disabled or the memory was
// already touched (a reused heap chunk).
inline void advise_huge_pages(const at::Tensor& fresh) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const size_t bytes = fresh.nbytes();
  if (bytes < 2 * kHuge) return;
  const auto start = reinterpret_cast<uintptr_t>(fresh.data_ptr());
  const uintptr_t first = (start + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (start + bytes) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)fresh;
#endif
}

}  // namespace tskd_fast::cpu
