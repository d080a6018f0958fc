// The CPU output pool of output_pool.h.
#include "cpu/output_pool.h"

#include <ATen/ATen.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <mutex>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__unix__)
#include <pthread.h>
#endif

namespace tskd_fast::cpu {
namespace {

constexpr size_t kAlign = size_t(2) << 20;

struct Block {
  void* ptr;
  size_t capacity;
};

class OutputPool {
 public:
  // A block of at least `bytes`: the smallest released one with at most a quarter more (a
  // training loop asks for the same sizes every step, and a looser fit would hold memory its
  // outputs do not use), else a new one.
  Block acquire(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->capacity >= bytes && it->capacity <= bytes + bytes / 4 + kAlign &&
            (best == free_.end() || it->capacity < best->capacity)) {
          best = it;
        }
      }
      if (best != free_.end()) {
        const Block block = *best;
        free_.erase(best);
        cached_ -= block.capacity;
        live_ += block.capacity;
        report(block.ptr, static_cast<int64_t>(block.capacity));
        return block;
      }
    }
    const size_t capacity = (bytes + kAlign - 1) / kAlign * kAlign;
    void* ptr = std::aligned_alloc(kAlign, capacity);
    TORCH_CHECK(ptr != nullptr, "tskd_fast: out of memory allocating ", capacity,
                " bytes for a kernel output");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(ptr, capacity, MADV_HUGEPAGE);  // best effort: 512x fewer faults on the first touch
#endif
    std::lock_guard<std::mutex> lock(mutex_);
    live_ += capacity;
    report(ptr, static_cast<int64_t>(capacity));
    return {ptr, capacity};
  }

  // Back into the pool; the oldest released blocks go back to the system past the cache limit.
  void release(Block block) {
    std::deque<Block> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_ -= std::min(live_, block.capacity);  // a block from before a fork is new to this pool
      report(block.ptr, -static_cast<int64_t>(block.capacity));
      free_.push_back(block);
      cached_ += block.capacity;
      while (cached_ > kPooledCacheBytes && !free_.empty()) {
        cached_ -= free_.front().capacity;
        evicted.push_back(free_.front());
        free_.pop_front();
      }
    }
    for (const Block& b : evicted) std::free(b.ptr);
  }

  size_t cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

  size_t release_all() {
    std::deque<Block> evicted;
    size_t bytes = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      evicted.swap(free_);
      bytes = cached_;
      cached_ = 0;
    }
    for (const Block& b : evicted) std::free(b.ptr);
    return bytes;
  }

 private:
  // So that the profiler's memory events (and peak-memory measurements built on them) see these
  // outputs like any other allocation.
  void report(void* ptr, int64_t delta) const {
    if (c10::memoryProfilingEnabled()) {
      c10::reportMemoryUsageToProfiler(ptr, delta, live_, live_ + cached_, c10::Device(c10::kCPU));
    }
  }

  std::mutex mutex_;
  std::deque<Block> free_;
  size_t cached_ = 0;
  size_t live_ = 0;
};

// Never destroyed: outputs may outlive static destruction at exit. A forked child starts a fresh
// pool: another thread of the parent may have held the lock at the fork, and the blocks the
// parent had cached stay with the parent (in the child they are leaked copy-on-write pages).
std::atomic<OutputPool*> instance{nullptr};

OutputPool& pool() {
  static const bool once = [] {
    instance.store(new OutputPool());
#if defined(__unix__)
    pthread_atfork(nullptr, nullptr, [] { instance.store(new OutputPool()); });
#endif
    return true;
  }();
  (void)once;
  return *instance.load();
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options,
                        at::MemoryFormat format) {
  const at::TensorOptions layout = options.memory_format(format);
  if (options.device().type() != c10::kCPU) return at::empty(sizes, layout);
  size_t numel = 1;
  for (const int64_t s : sizes) numel *= static_cast<size_t>(s);
  const size_t bytes = numel * c10::elementSize(c10::typeMetaToScalarType(options.dtype()));
  if (bytes < kPooledOutputBytes) return at::empty(sizes, layout);
  const at::Tensor shape = at::empty(sizes, layout.device(at::kMeta));  // the strides of `format`
  const Block block = pool().acquire(bytes);
  return at::for_blob(block.ptr, sizes)
      .strides(shape.strides())
      .deleter([block](void*) { pool().release(block); })
      .options(options.memory_format(std::nullopt))
      .allocator(c10::GetCPUAllocator())
      .resizeable_storage()
      .make_tensor();
}

int64_t output_pool_cached_bytes() { return static_cast<int64_t>(pool().cached()); }

int64_t release_pooled_outputs() { return static_cast<int64_t>(pool().release_all()); }

}  // namespace tskd_fast::cpu
