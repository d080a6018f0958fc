#pragma once

// Reductions over the threads that share one row. A row group is either kGroup lanes of one warp
// (kGroup a power of two <= 32, several rows per warp) or a whole block (kGroup = blockDim.x, a
// multiple of 32). Every thread of the group ends with the same, bitwise identical result (the
// xor butterfly combines the same pair in both orders, and the operations are commutative), so
// decisions taken on a reduced value are uniform across the group.
#include <cmath>
#include <cstdint>

namespace tskd_fast::cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// NaN-propagating maximum: a NaN anywhere in the row must reach the row maximum, which fmaxf
// would drop.
__device__ __forceinline__ float nan_max(float a, float b) { return (isnan(a) || a > b) ? a : b; }

// A value and its column: the teacher's maximum and the first column holding it.
struct MaxIndex {
  float value;
  int64_t index;
};

__device__ __forceinline__ MaxIndex max_index_init() { return {-INFINITY, INT64_MAX}; }

// torch.argmax's rule: NaN is the largest value, and ties go to the lowest column.
__device__ __forceinline__ MaxIndex max_first(const MaxIndex& a, const MaxIndex& b) {
  const bool a_nan = isnan(a.value), b_nan = isnan(b.value);
  if (a_nan != b_nan) return a_nan ? a : b;
  if (!a_nan && a.value != b.value) return a.value > b.value ? a : b;
  return a.index <= b.index ? a : b;
}

// Several running sums reduced together (one pass over the row gathers them all).
template <int N>
struct Sums {
  float v[N];

  __device__ __forceinline__ float& operator[](int i) { return v[i]; }
  __device__ __forceinline__ float operator[](int i) const { return v[i]; }
};

template <int N>
__device__ __forceinline__ Sums<N> zero_sums() {
  Sums<N> s;
#pragma unroll
  for (int i = 0; i < N; ++i) s[i] = 0.0f;
  return s;
}

struct SumOp {
  template <int N>
  __device__ __forceinline__ Sums<N> operator()(const Sums<N>& a, const Sums<N>& b) const {
    Sums<N> r;
#pragma unroll
    for (int i = 0; i < N; ++i) r[i] = a[i] + b[i];
    return r;
  }
};

struct NanMaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return nan_max(a, b); }
};

struct MaxFirstOp {
  __device__ __forceinline__ MaxIndex operator()(const MaxIndex& a, const MaxIndex& b) const {
    return max_first(a, b);
  }
};

__device__ __forceinline__ float shfl_xor(float v, int offset) {
  return __shfl_xor_sync(kFullMask, v, offset);
}

__device__ __forceinline__ int64_t shfl_xor(int64_t v, int offset) {
  return __shfl_xor_sync(kFullMask, v, offset);
}

__device__ __forceinline__ MaxIndex shfl_xor(const MaxIndex& v, int offset) {
  return {shfl_xor(v.value, offset), shfl_xor(v.index, offset)};
}

template <int N>
__device__ __forceinline__ Sums<N> shfl_xor(const Sums<N>& v, int offset) {
  Sums<N> r;
#pragma unroll
  for (int i = 0; i < N; ++i) r[i] = shfl_xor(v[i], offset);
  return r;
}

// Must be reached by every thread of the warp (kGroup <= 32: the shuffles name the whole warp)
// or of the block (kGroup > 32: __syncthreads), never from inside a row-dependent branch.
template <int kGroup, typename T, typename Op>
__device__ __forceinline__ T group_reduce(T value, Op op) {
  static_assert(kGroup <= kWarpSize ? (kGroup & (kGroup - 1)) == 0 : kGroup % kWarpSize == 0,
                "a row group is a power of two <= 32 lanes or a whole number of warps");
  constexpr int kLanes = kGroup < kWarpSize ? kGroup : kWarpSize;
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) value = op(value, shfl_xor(value, offset));
  if constexpr (kGroup > kWarpSize) {
    constexpr int kWarps = kGroup / kWarpSize;
    __shared__ T partial[kWarps];
    const int warp = threadIdx.x / kWarpSize;
    if (threadIdx.x % kWarpSize == 0) partial[warp] = value;
    __syncthreads();
    // Every thread folds the partials in the same order, so all agree bit for bit.
    value = partial[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) value = op(value, partial[w]);
    __syncthreads();  // the next reduction of this type reuses `partial`
  }
  return value;
}

}  // namespace tskd_fast::cuda
