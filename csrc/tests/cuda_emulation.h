#pragma once

// A host emulation of the parts of the CUDA execution model that the tskd_fast kernels use, so
// that their source (csrc/cuda/*_kernels.cuh) runs, and is tested, on machines without a GPU.
// Every thread of a block is a cooperative fiber (ucontext) on one OS thread; warp shuffles and
// __syncthreads are block-wide barriers, at which the scheduler runs the other threads up to the
// same point. That is exact for kernels whose threads all make the same sequence of collective
// calls, the contract of csrc/cuda/reduce.cuh; a thread that returns leaves the later barriers,
// as an exited GPU thread does. Blocks run one after another, so function-scope __shared__
// variables can be plain statics. Not emulated: memory-model races, and the GPU's exp2f/expf
// (the host libm's are used, which differ by an ulp or two).
#ifdef __CUDACC__
#error "cuda_emulation.h emulates CUDA for host compilers; nvcc has the real thing"
#endif

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

using std::isfinite;
using std::isnan;

namespace cuda_emulation {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

}  // namespace cuda_emulation

inline cuda_emulation::Dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace cuda_emulation {

constexpr size_t kStackBytes = 128 * 1024;

struct State {
  ucontext_t scheduler;
  std::vector<ucontext_t> contexts;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<char> done;
  std::vector<unsigned> shuffles;  // per thread: how many shuffles it made (picks the buffer)
  std::vector<uint64_t> slots[2];  // double-buffered shuffle values, one per thread
  std::function<void()> kernel;
};

inline State state;

// Back to the scheduler; resumed once every live thread of the block has reached a barrier.
inline void barrier() {
  if (swapcontext(&state.contexts[threadIdx.x], &state.scheduler) != 0) {
    throw std::runtime_error("cuda_emulation: swapcontext failed");
  }
}

// One barrier per shuffle: a thread writes buffer n % 2 before the n-th barrier and reads it
// after; it cannot write that buffer again (shuffle n + 2) before every thread has passed
// barrier n + 1, that is, finished reading.
template <typename T>
T shuffle_xor(T value, int offset) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "one slot per value");
  const unsigned me = threadIdx.x;
  const unsigned partner = (me & ~31u) | ((me & 31u) ^ static_cast<unsigned>(offset));
  std::vector<uint64_t>& slots = state.slots[state.shuffles[me]++ % 2];
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  slots[me] = bits;
  barrier();
  T out;
  std::memcpy(&out, &slots[partner], sizeof(T));
  return out;
}

inline void entry() {
  state.kernel();
  state.done[threadIdx.x] = 1;  // then on to uc_link, the scheduler
}

// Runs kernel() on a grid of `blocks` blocks of `threads` threads (threads a multiple of 32).
template <typename Kernel>
void launch(int64_t blocks, int threads, Kernel&& kernel) {
  if (threads <= 0 || threads % 32 != 0) throw std::invalid_argument("whole warps only");
  state.kernel = std::forward<Kernel>(kernel);
  blockDim.x = static_cast<unsigned>(threads);
  gridDim.x = static_cast<unsigned>(blocks);
  state.contexts.assign(threads, ucontext_t{});
  while (state.stacks.size() < static_cast<size_t>(threads)) {
    state.stacks.emplace_back(new char[kStackBytes]);
  }
  for (int64_t block = 0; block < blocks; ++block) {
    blockIdx.x = static_cast<unsigned>(block);
    state.done.assign(threads, 0);
    state.shuffles.assign(threads, 0);
    state.slots[0].assign(threads, 0);
    state.slots[1].assign(threads, 0);
    for (int t = 0; t < threads; ++t) {
      ucontext_t& ctx = state.contexts[t];
      getcontext(&ctx);
      ctx.uc_stack.ss_sp = state.stacks[t].get();
      ctx.uc_stack.ss_size = kStackBytes;
      ctx.uc_link = &state.scheduler;
      makecontext(&ctx, entry, 0);
    }
    // Each round runs every live thread up to its next barrier or its end.
    for (bool live = true; live;) {
      live = false;
      for (int t = 0; t < threads; ++t) {
        if (state.done[t]) continue;
        threadIdx.x = static_cast<unsigned>(t);
        swapcontext(&state.scheduler, &state.contexts[t]);
        live = live || !state.done[t];
      }
    }
  }
}

}  // namespace cuda_emulation

inline float __shfl_xor_sync(unsigned, float value, int offset) {
  return cuda_emulation::shuffle_xor(value, offset);
}

inline int64_t __shfl_xor_sync(unsigned, int64_t value, int offset) {
  return cuda_emulation::shuffle_xor(value, offset);
}

inline void __syncthreads() { cuda_emulation::barrier(); }

// Fibers of one block run on one OS thread and switch only at barriers: an add is atomic.
inline float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}
