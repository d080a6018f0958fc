#pragma once

// CUDA kernels of the fused ConvLSTM gate op (math in tskd_fast/convlstm_math.h, layout in
// tskd_fast/convlstm_layout.h). A thread owns kVec consecutive positions of one row: 16-byte
// packs when every operand allows them (the host checks once per launch), else one element.
//   forward, and backward without peephole sums: grid-stride over (sample, pack);
//   backward with peephole sums: grid-stride over packs, each thread walking the samples in
//     order with the sums in registers: no atomics, deterministic.
// Math in float32 whatever the storage type (float, half, bfloat16).
#include <cstdint>

#include "cuda/row_io.cuh"
#include "tskd_fast/convlstm_layout.h"
#include "tskd_fast/convlstm_math.h"

namespace tskd_fast::cuda {

template <typename scalar_t>
struct ConvLstmParams {
  ConvLstmLayout l;
  const scalar_t* gates;
  const scalar_t* c_prev;
  const scalar_t* w_ci;  // (rows, cols) or nullptr
  const scalar_t* w_cf;
  const scalar_t* w_co;
  // forward
  scalar_t* h;
  scalar_t* c;
  // backward
  const scalar_t* grad_h;  // or nullptr: zero
  const scalar_t* grad_c;  // or nullptr: zero
  scalar_t* grad_gates;
  scalar_t* grad_c_prev;
  float* sum_ci;  // (rows, cols) batch sums, or nullptr
  float* sum_cf;
  float* sum_co;
};

using GateMath = ScalarGateOps<float>;

template <int kVec, typename scalar_t>
__device__ __forceinline__ void load_floats(const scalar_t* p, float (&out)[kVec]) {
  if constexpr (kVec == 1) {
    out[0] = static_cast<float>(*p);
  } else {
    const Pack<scalar_t> pack = load_pack(p);
#pragma unroll
    for (int j = 0; j < kVec; ++j) out[j] = static_cast<float>(pack.v[j]);
  }
}

// A null p reads as zeros.
template <int kVec, typename scalar_t>
__device__ __forceinline__ void load_floats_or_zero(const scalar_t* p, int64_t offset,
                                                    float (&out)[kVec]) {
  if (p == nullptr) {
#pragma unroll
    for (int j = 0; j < kVec; ++j) out[j] = 0.0f;
  } else {
    load_floats<kVec>(p + offset, out);
  }
}

template <int kVec, typename scalar_t>
__device__ __forceinline__ void store_floats(scalar_t* p, const float (&in)[kVec]) {
  if constexpr (kVec == 1) {
    *p = static_cast<scalar_t>(in[0]);
  } else {
    Pack<scalar_t> pack;
#pragma unroll
    for (int j = 0; j < kVec; ++j) pack.v[j] = static_cast<scalar_t>(in[j]);
    store_pack(p, pack);
  }
}

// Offsets of one thread's positions: pos (a multiple of kVec) of sample b.
struct GateOffsets {
  int64_t gate;
  int64_t state;
};

__device__ __forceinline__ GateOffsets gate_offsets(const ConvLstmLayout& l, int64_t b,
                                                    int64_t pos) {
  const int64_t q = pos / l.cols, k = pos - q * l.cols;
  return {b * l.gate_batch_stride + q * l.gate_row_stride + k, b * l.rows * l.cols + pos};
}

template <typename scalar_t, int kVec, bool kPeepholes>
__global__ void convlstm_gates_forward_kernel(ConvLstmParams<scalar_t> p) {
  const int64_t packs = p.l.rows * p.l.cols / kVec;
  const int64_t items = p.l.batch * packs;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < items;
       item += stride) {
    const int64_t b = item / packs, pos = (item - b * packs) * kVec;
    const GateOffsets o = gate_offsets(p.l, b, pos);
    float a_i[kVec], a_f[kVec], a_g[kVec], a_o[kVec], c_prev[kVec];
    float w_ci[kVec], w_cf[kVec], w_co[kVec], h[kVec], c[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) w_ci[j] = w_cf[j] = w_co[j] = 0.0f;
    load_floats<kVec>(p.gates + o.gate, a_i);
    load_floats<kVec>(p.gates + o.gate + p.l.gate_block, a_f);
    load_floats<kVec>(p.gates + o.gate + 2 * p.l.gate_block, a_g);
    load_floats<kVec>(p.gates + o.gate + 3 * p.l.gate_block, a_o);
    load_floats<kVec>(p.c_prev + o.state, c_prev);
    if constexpr (kPeepholes) {
      load_floats_or_zero<kVec>(p.w_ci, pos, w_ci);
      load_floats_or_zero<kVec>(p.w_cf, pos, w_cf);
      load_floats_or_zero<kVec>(p.w_co, pos, w_co);
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const GateState<float> s = convlstm_cell<GateMath, kPeepholes>(
          a_i[j], a_f[j], a_g[j], a_o[j], c_prev[j], w_ci[j], w_cf[j], w_co[j]);
      h[j] = s.h;
      c[j] = s.c;
    }
    store_floats<kVec>(p.h + o.state, h);
    store_floats<kVec>(p.c + o.state, c);
  }
}

// The gradients of sample b at pos (written), and with kSums the peephole terms added to sums.
template <typename scalar_t, int kVec, bool kPeepholes, bool kSums>
__device__ __forceinline__ void backward_at(const ConvLstmParams<scalar_t>& p, int64_t b,
                                            int64_t pos, const float (&w_ci)[kVec],
                                            const float (&w_cf)[kVec], const float (&w_co)[kVec],
                                            float (&sums)[3][kVec]) {
  const GateOffsets o = gate_offsets(p.l, b, pos);
  const int64_t block = p.l.gate_block;
  float a_i[kVec], a_f[kVec], a_g[kVec], a_o[kVec], c_prev[kVec], dh[kVec], dc[kVec];
  load_floats<kVec>(p.gates + o.gate, a_i);
  load_floats<kVec>(p.gates + o.gate + block, a_f);
  load_floats<kVec>(p.gates + o.gate + 2 * block, a_g);
  load_floats<kVec>(p.gates + o.gate + 3 * block, a_o);
  load_floats<kVec>(p.c_prev + o.state, c_prev);
  load_floats_or_zero<kVec>(p.grad_h, o.state, dh);
  load_floats_or_zero<kVec>(p.grad_c, o.state, dc);
  float g_i[kVec], g_f[kVec], g_g[kVec], g_o[kVec], g_c[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const GateGrads<float> g = convlstm_cell_backward<GateMath, kPeepholes>(
        a_i[j], a_f[j], a_g[j], a_o[j], c_prev[j], w_ci[j], w_cf[j], w_co[j], dh[j], dc[j]);
    g_i[j] = g.a_i;
    g_f[j] = g.a_f;
    g_g[j] = g.a_g;
    g_o[j] = g.a_o;
    g_c[j] = g.c_prev;
    if constexpr (kSums) {
      sums[0][j] += g.a_i * c_prev[j];
      sums[1][j] += g.a_f * c_prev[j];
      sums[2][j] += g.a_o * g.c;
    }
  }
  store_floats<kVec>(p.grad_gates + o.gate, g_i);
  store_floats<kVec>(p.grad_gates + o.gate + block, g_f);
  store_floats<kVec>(p.grad_gates + o.gate + 2 * block, g_g);
  store_floats<kVec>(p.grad_gates + o.gate + 3 * block, g_o);
  store_floats<kVec>(p.grad_c_prev + o.state, g_c);
}

template <typename scalar_t, int kVec, bool kPeepholes, bool kSums>
__global__ void convlstm_gates_backward_kernel(ConvLstmParams<scalar_t> p) {
  const int64_t packs = p.l.rows * p.l.cols / kVec;
  const int64_t items = kSums ? packs : p.l.batch * packs;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < items;
       item += stride) {
    const int64_t b = kSums ? 0 : item / packs, pos = (item - b * packs) * kVec;
    float w_ci[kVec], w_cf[kVec], w_co[kVec], sums[3][kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      w_ci[j] = w_cf[j] = w_co[j] = 0.0f;
      sums[0][j] = sums[1][j] = sums[2][j] = 0.0f;
    }
    if constexpr (kPeepholes) {
      load_floats_or_zero<kVec>(p.w_ci, pos, w_ci);
      load_floats_or_zero<kVec>(p.w_cf, pos, w_cf);
      load_floats_or_zero<kVec>(p.w_co, pos, w_co);
    }
    if constexpr (kSums) {
      for (int64_t sample = 0; sample < p.l.batch; ++sample) {
        backward_at<scalar_t, kVec, kPeepholes, true>(p, sample, pos, w_ci, w_cf, w_co, sums);
      }
      float* const outputs[3] = {p.sum_ci, p.sum_cf, p.sum_co};
#pragma unroll
      for (int s = 0; s < 3; ++s) {
        if (outputs[s] == nullptr) continue;
#pragma unroll
        for (int j = 0; j < kVec; ++j) outputs[s][pos + j] = sums[s][j];
      }
    } else {
      backward_at<scalar_t, kVec, kPeepholes, false>(p, b, pos, w_ci, w_cf, w_co, sums);
    }
  }
}

// Whether every operand of p takes kPack-wide loads: 16-byte aligned pointers and offsets that
// stay multiples of the pack (cols, strides and blocks).
template <typename scalar_t>
inline bool convlstm_takes_packs(const ConvLstmParams<scalar_t>& p) {
  constexpr int kVec = kPack<scalar_t>;
  const void* pointers[] = {p.gates, p.c_prev, p.w_ci,   p.w_cf,       p.w_co,       p.h,
                            p.c,     p.grad_h, p.grad_c, p.grad_gates, p.grad_c_prev};
  for (const void* q : pointers) {
    if (reinterpret_cast<uintptr_t>(q) % 16 != 0) return false;  // nullptr is 0: fine
  }
  return p.l.cols % kVec == 0 && p.l.gate_row_stride % kVec == 0 && p.l.gate_block % kVec == 0 &&
         p.l.gate_batch_stride % kVec == 0;
}

constexpr int kConvLstmThreads = 256;

// Blocks for `items` thread work items: enough to fill the GPU, capped (grid-stride beyond).
inline int64_t convlstm_blocks(int64_t items, int64_t max_blocks) {
  const int64_t blocks = (items + kConvLstmThreads - 1) / kConvLstmThreads;
  return blocks < max_blocks ? blocks : max_blocks;
}

// Calls launch(kernel, items) with the forward kernel for p.
template <typename scalar_t, typename Launch>
void launch_convlstm_forward(const ConvLstmParams<scalar_t>& p, Launch&& launch) {
  constexpr int kVec = kPack<scalar_t>;
  const bool peepholes = p.w_ci || p.w_cf || p.w_co;
  const int64_t positions = p.l.rows * p.l.cols;
  if (convlstm_takes_packs(p)) {
    const int64_t items = p.l.batch * (positions / kVec);
    if (peepholes) return launch(convlstm_gates_forward_kernel<scalar_t, kVec, true>, items);
    return launch(convlstm_gates_forward_kernel<scalar_t, kVec, false>, items);
  }
  const int64_t items = p.l.batch * positions;
  if (peepholes) return launch(convlstm_gates_forward_kernel<scalar_t, 1, true>, items);
  launch(convlstm_gates_forward_kernel<scalar_t, 1, false>, items);
}

template <typename scalar_t, bool kPeepholes, bool kSums, typename Launch>
void launch_convlstm_backward_as(const ConvLstmParams<scalar_t>& p, Launch&& launch) {
  constexpr int kVec = kPack<scalar_t>;
  const int64_t positions = p.l.rows * p.l.cols;
  const int64_t samples = kSums ? 1 : p.l.batch;
  if (convlstm_takes_packs(p)) {
    return launch(convlstm_gates_backward_kernel<scalar_t, kVec, kPeepholes, kSums>,
                  samples * (positions / kVec));
  }
  launch(convlstm_gates_backward_kernel<scalar_t, 1, kPeepholes, kSums>, samples * positions);
}

// Calls launch(kernel, items) with the backward kernel for p.
template <typename scalar_t, typename Launch>
void launch_convlstm_backward(const ConvLstmParams<scalar_t>& p, Launch&& launch) {
  const bool peepholes = p.w_ci || p.w_cf || p.w_co;
  const bool sums = p.sum_ci || p.sum_cf || p.sum_co;
  if (sums) return launch_convlstm_backward_as<scalar_t, true, true>(p, launch);
  if (peepholes) return launch_convlstm_backward_as<scalar_t, true, false>(p, launch);
  launch_convlstm_backward_as<scalar_t, false, false>(p, launch);
}

}  // namespace tskd_fast::cuda
