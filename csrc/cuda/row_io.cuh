#pragma once

// Loads and stores of logit rows. Rows are read in 16-byte packs when every row start is 16-byte
// aligned and the class count is a multiple of the pack (the caller checks once per launch and
// passes `aligned`); otherwise element by element, consecutive lanes on consecutive columns so
// that each warp access stays coalesced.
#include <cstdint>

namespace tskd_fast::cuda {

template <typename scalar_t>
constexpr int kPack = 16 / static_cast<int>(sizeof(scalar_t));

template <typename scalar_t>
struct alignas(16) Pack {
  scalar_t v[kPack<scalar_t>];
};

template <typename scalar_t>
__device__ __forceinline__ Pack<scalar_t> load_pack(const scalar_t* p) {
  return *reinterpret_cast<const Pack<scalar_t>*>(p);
}

template <typename scalar_t>
__device__ __forceinline__ void store_pack(scalar_t* p, const Pack<scalar_t>& pack) {
  *reinterpret_cast<Pack<scalar_t>*>(p) = pack;
}

// Whether a (rows, classes) operand with this data pointer and row stride can be read in packs:
// every row start 16-byte aligned and no pack straddling a row end.
template <typename scalar_t>
inline bool rows_take_packs(const void* data, int64_t row_stride, int64_t classes) {
  constexpr int kVec = kPack<scalar_t>;
  return reinterpret_cast<uintptr_t>(data) % 16 == 0 && row_stride % kVec == 0 &&
         classes % kVec == 0;
}

// Calls f(k, z_k, v_k) for the columns k of one row that lane `lane` of a group of kGroup
// threads owns, in increasing k (so a strict comparison keeps the first of equal values). With
// load_teacher false, v_k is 0 and the teacher row is not read.
template <int kGroup, typename scalar_t, typename F>
__device__ __forceinline__ void for_each_column(const scalar_t* __restrict__ z,
                                                const scalar_t* __restrict__ v, int64_t classes,
                                                int lane, bool aligned, bool load_teacher, F&& f) {
  constexpr int kVec = kPack<scalar_t>;
  if (aligned) {
#pragma unroll 2
    for (int64_t k = int64_t(lane) * kVec; k < classes; k += int64_t(kGroup) * kVec) {
      const Pack<scalar_t> zp = load_pack(z + k);
      Pack<scalar_t> vp{};
      if (load_teacher) vp = load_pack(v + k);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        f(k + j, static_cast<float>(zp.v[j]), load_teacher ? static_cast<float>(vp.v[j]) : 0.0f);
      }
    }
  } else {
#pragma unroll 4
    for (int64_t k = lane; k < classes; k += kGroup) {
      f(k, static_cast<float>(z[k]), load_teacher ? static_cast<float>(v[k]) : 0.0f);
    }
  }
}

// Writes out_k = f(k, z_k, v_k) for the columns lane `lane` owns (the ownership of
// for_each_column); z and v may be nullptr when load_inputs is false (then z_k = v_k = 0).
template <int kGroup, typename scalar_t, typename F>
__device__ __forceinline__ void map_columns(const scalar_t* __restrict__ z,
                                            const scalar_t* __restrict__ v,
                                            scalar_t* __restrict__ out, int64_t classes, int lane,
                                            bool aligned, bool load_inputs, bool load_teacher,
                                            F&& f) {
  constexpr int kVec = kPack<scalar_t>;
  load_teacher = load_teacher && load_inputs;
  if (aligned) {
    for (int64_t k = int64_t(lane) * kVec; k < classes; k += int64_t(kGroup) * kVec) {
      Pack<scalar_t> zp{}, vp{}, result;
      if (load_inputs) zp = load_pack(z + k);
      if (load_teacher) vp = load_pack(v + k);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        result.v[j] = static_cast<scalar_t>(
            f(k + j, static_cast<float>(zp.v[j]), static_cast<float>(vp.v[j])));
      }
      store_pack(out + k, result);
    }
  } else {
    for (int64_t k = lane; k < classes; k += kGroup) {
      const float zk = load_inputs ? static_cast<float>(z[k]) : 0.0f;
      const float vk = load_teacher ? static_cast<float>(v[k]) : 0.0f;
      out[k] = static_cast<scalar_t>(f(k, zk, vk));
    }
  }
}

}  // namespace tskd_fast::cuda
