#pragma once

// The fused ConvLSTM gate op on the CPU, forward and backward (math in
// tskd_fast/convlstm_math.h). Each sample is walked as (rows, cols) in the layout of
// ConvLstmLayout and cut into tiles of about kTileElements; a task computes one tile:
//   forward, and backward without peephole sums: one (sample, tile) per task, every operand read
//     and written once, streaming;
//   backward with peephole sums: one tile per task over every sample in order, the sums held in a
//     tile-sized buffer: no atomics, no per-thread copies of the sums, and each sum is added up
//     in batch order whatever the number of threads (deterministic).
// Half and bfloat16 operands are widened to float on load (vec_lanes.h); exponentials use the
// fast exp2 of fast_exp.h (float) or ATen's vectorised exp (double).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/convlstm_args.h"
#include "cpu/fast_exp.h"
#include "cpu/vec_lanes.h"
#include "tskd_fast/convlstm_math.h"

namespace tskd_fast::cpu::CPU_CAPABILITY {

// The SIMD policy of the shared gate math.
template <typename T>
struct VecGateOps {
  using V = Vectorized<T>;
  // float on AVX2 / AVX-512: sigmoid and tanh straight from one clamped exp2 each (fast_exp.h),
  // about a third fewer instructions than the sign-split forms below, which the rest use.
  static constexpr bool kOwnActivations = std::is_same_v<T, float> && kHasExp2Clamped;
  static V sigmoid(const V& x) {  // 1 / (1 + exp(-x))
    return V(T(1)) / (V(T(1)) + exp2_clamped(x * V(T(-M_LOG2E))));
  }
  static V tanh(const V& x) {  // 1 - 2 / (1 + exp(2x))
    const V r = V(T(1)) / (V(T(1)) + exp2_clamped(x * V(T(2 * M_LOG2E))));
    return at::vec::fmadd(V(T(-2)), r, V(T(1)));
  }
  static V exp_nonpositive(const V& x) {
    if constexpr (std::is_same_v<T, float>) {
      return exp2_nonpositive(x * V(T(M_LOG2E)));
    } else {
      return x.exp();
    }
  }
  static V neg_abs(const V& x) { return x.abs().neg(); }
  static V select_nonnegative(const V& x, const V& a, const V& b) {
    return V::blendv(b, a, x >= V(T(0)));
  }
  static V with_sign_of(const V& t, const V& x) { return V::blendv(t, t.neg(), x < V(T(0))); }
};

// Elements per sample in one tile (a multiple of every vector width).
constexpr int64_t kTileElements = 2048;
constexpr int64_t kMinTileElements = 256;

// The cut of one sample's (rows, cols) into tiles: whole rows when a row is short (several per
// tile), else one row cut into column spans.
struct Tiling {
  int64_t rows_per_tile;
  int64_t cols_per_tile;
  int64_t row_tiles;
  int64_t col_tiles;
  int64_t count() const { return row_tiles * col_tiles; }
};

inline Tiling make_tiling(const ConvLstmLayout& l, int64_t target) {
  Tiling t{};
  if (l.cols >= target) {
    t.rows_per_tile = 1;
    t.cols_per_tile = target;
  } else {
    t.cols_per_tile = std::max<int64_t>(l.cols, 1);
    t.rows_per_tile = std::max<int64_t>(1, target / t.cols_per_tile);
  }
  t.row_tiles = (l.rows + t.rows_per_tile - 1) / t.rows_per_tile;
  t.col_tiles = (l.cols + t.cols_per_tile - 1) / t.cols_per_tile;
  return t;
}

// Loads `count` (<= kWidth) elements of p into parts; a null p reads as zeros.
template <typename scalar_t>
inline __attribute__((always_inline)) void load_or_zero(const scalar_t* p,
                                                        typename Lanes<scalar_t>::Vec* out,
                                                        int count) {
  using L = Lanes<scalar_t>;
  if (p == nullptr) {
    for (int i = 0; i < L::kParts; ++i) out[i] = typename L::Vec(0);
  } else if (count == L::kWidth) {
    L::load(p, out);
  } else {
    L::load(p, out, count);
  }
}

// The peepholes w_ci, w_cf and w_co at column k of a row (a null one reads as zeros).
template <typename scalar_t>
inline __attribute__((always_inline)) void load_peepholes(
    const scalar_t* w_ci, const scalar_t* w_cf, const scalar_t* w_co, int64_t k, int count,
    typename Lanes<scalar_t>::Vec* wi, typename Lanes<scalar_t>::Vec* wf,
    typename Lanes<scalar_t>::Vec* wo) {
  load_or_zero(w_ci ? w_ci + k : nullptr, wi, count);
  load_or_zero(w_cf ? w_cf + k : nullptr, wf, count);
  load_or_zero(w_co ? w_co + k : nullptr, wo, count);
}

template <typename scalar_t>
inline __attribute__((always_inline)) void store_lanes(scalar_t* p,
                                                       const typename Lanes<scalar_t>::Vec* in,
                                                       int count) {
  using L = Lanes<scalar_t>;
  if (count == L::kWidth) {
    L::store(p, in);
  } else {
    L::store(p, in, count);
  }
}

// Row pointers of one sample b, row q.
template <typename scalar_t>
struct GateRow {
  const scalar_t* gate[4];
  int64_t state;    // offset of the row in the state tensors
  int64_t weights;  // offset of the row in the peepholes

  GateRow(const void* gates, const ConvLstmLayout& l, int64_t b, int64_t q) {
    const scalar_t* base =
        static_cast<const scalar_t*>(gates) + b * l.gate_batch_stride + q * l.gate_row_stride;
    for (int g = 0; g < 4; ++g) gate[g] = base + g * l.gate_block;
    state = (b * l.rows + q) * l.cols;
    weights = q * l.cols;
  }
};

template <typename scalar_t>
const scalar_t* at_offset(const void* p, int64_t offset) {
  return p == nullptr ? nullptr : static_cast<const scalar_t*>(p) + offset;
}

template <typename scalar_t>
scalar_t* at_offset(void* p, int64_t offset) {
  return static_cast<scalar_t*>(p) + offset;
}

// The row loops below run in blocks of kPassBlock columns, two passes per block. In one pass
// per element, each vector's work was a chain of three exponentials and divides, the cell
// state, then a fourth and a fifth: about 120 cycles deep and 90 instructions long, so the
// out-of-order window held fewer than three such chains and the kernel waited on latency (a
// second core doubled its speed, the memory far from busy; benchmarks/README.md, "Kernel design
// measurements").
// Split at the cell state, each pass's chains are half as deep, and the activations the second
// pass needs wait in a small buffer (L1).
constexpr int64_t kPassBlock = 256;

// Over [k0, k1) in blocks of kPassBlock columns: first(k, count, at) then second(k, count, at)
// over each block, in steps of W columns (the last one may be short); at = k minus the block's
// first column, the step's place in the passes' block buffers.
template <int W, typename F1, typename F2>
inline __attribute__((always_inline)) void in_two_passes(int64_t k0, int64_t k1, F1&& first,
                                                         F2&& second) {
  for (int64_t kb = k0; kb < k1; kb += kPassBlock) {
    const int64_t ke = std::min(k1, kb + kPassBlock);
    auto over_block = [&](auto&& pass) __attribute__((always_inline)) {
      int64_t k = kb;
      for (; k + W <= ke; k += W) pass(k, W, k - kb);
      if (k < ke) pass(k, static_cast<int>(ke - k), k - kb);
    };
    over_block(first);
    over_block(second);
  }
}

// Forward over columns [k0, k1) of one row: per block, the input gates and c (kept in float for
// the second pass, so that h sees c unrounded), then the output gate and h.
template <typename scalar_t, bool kPeepholes>
void forward_row(const ConvLstmGatesArgs& a, int64_t b, int64_t q, int64_t k0, int64_t k1) {
  using L = Lanes<scalar_t>;
  using T = typename L::opmath;
  using Vec = typename L::Vec;
  using Ops = VecGateOps<T>;
  constexpr int W = L::kWidth, P = L::kParts, VW = Vec::size();
  static_assert(kPassBlock % W == 0, "a block is whole steps");
  const GateRow<scalar_t> r(a.gates, a.layout, b, q);
  const scalar_t* c_prev = at_offset<scalar_t>(a.c_prev, r.state);
  const scalar_t* w_ci = kPeepholes ? at_offset<scalar_t>(a.w_ci, r.weights) : nullptr;
  const scalar_t* w_cf = kPeepholes ? at_offset<scalar_t>(a.w_cf, r.weights) : nullptr;
  const scalar_t* w_co = kPeepholes ? at_offset<scalar_t>(a.w_co, r.weights) : nullptr;
  scalar_t* h = at_offset<scalar_t>(a.h, r.state);
  scalar_t* c = at_offset<scalar_t>(a.c, r.state);
  alignas(64) T cell[kPassBlock];
  auto input_pass = [&](int64_t k, int count, int64_t at) __attribute__((always_inline)) {
    Vec ai[P], af[P], ag[P], cp[P], wi[P], wf[P], cv[P];
    load_or_zero(r.gate[0] + k, ai, count);
    load_or_zero(r.gate[1] + k, af, count);
    load_or_zero(r.gate[2] + k, ag, count);
    load_or_zero(c_prev + k, cp, count);
    if constexpr (kPeepholes) {
      load_or_zero(w_ci ? w_ci + k : nullptr, wi, count);
      load_or_zero(w_cf ? w_cf + k : nullptr, wf, count);
    }
    for (int i = 0; i < P; ++i) {
      cv[i] = convlstm_input_gates<Ops, kPeepholes>(ai[i], af[i], ag[i], cp[i], wi[i], wf[i]).c;
      cv[i].store(cell + at + i * VW);
    }
    store_lanes(c + k, cv, count);
  };
  auto output_pass = [&](int64_t k, int count, int64_t at) __attribute__((always_inline)) {
    Vec ao[P], wo[P], hv[P];
    load_or_zero(r.gate[3] + k, ao, count);
    if constexpr (kPeepholes) load_or_zero(w_co ? w_co + k : nullptr, wo, count);
    for (int i = 0; i < P; ++i) {
      const Vec cv = Vec::loadu(cell + at + i * VW);
      hv[i] = convlstm_output_gate<Ops, kPeepholes>(ao[i], cv, wo[i]) * gate_tanh<Ops>(cv);
    }
    store_lanes(h + k, hv, count);
  };
  in_two_passes<W>(k0, k1, input_pass, output_pass);
}

// Backward over columns [k0, k1) of one row; with kSums, the peephole terms are added to
// sums[0..2] (each indexed from k0). Per block: the recomputed gates and c, then the gradients.
template <typename scalar_t, bool kPeepholes, bool kSums>
void backward_row(const ConvLstmGatesBackwardArgs& a, int64_t b, int64_t q, int64_t k0, int64_t k1,
                  typename Lanes<scalar_t>::opmath* const* sums) {
  using L = Lanes<scalar_t>;
  using T = typename L::opmath;
  using Vec = typename L::Vec;
  using Ops = VecGateOps<T>;
  constexpr int W = L::kWidth, P = L::kParts, VW = Vec::size();
  static_assert(kPassBlock % W == 0, "a block is whole steps");
  const GateRow<scalar_t> r(a.gates, a.layout, b, q);
  const scalar_t* c_prev = at_offset<scalar_t>(a.c_prev, r.state);
  const scalar_t* grad_h = at_offset<scalar_t>(a.grad_h, r.state);
  const scalar_t* grad_c = at_offset<scalar_t>(a.grad_c, r.state);
  const scalar_t* w_ci = kPeepholes ? at_offset<scalar_t>(a.w_ci, r.weights) : nullptr;
  const scalar_t* w_cf = kPeepholes ? at_offset<scalar_t>(a.w_cf, r.weights) : nullptr;
  const scalar_t* w_co = kPeepholes ? at_offset<scalar_t>(a.w_co, r.weights) : nullptr;
  const ConvLstmLayout& l = a.layout;
  scalar_t* dgate =
      static_cast<scalar_t*>(a.grad_gates) + b * l.gate_batch_stride + q * l.gate_row_stride;
  scalar_t* dc_prev = at_offset<scalar_t>(a.grad_c_prev, r.state);
  // The recomputed i, f, g, o and c of the block, in float.
  alignas(64) T act[5][kPassBlock];
  auto gates_pass = [&](int64_t k, int count, int64_t at) __attribute__((always_inline)) {
    Vec ai[P], af[P], ag[P], ao[P], cp[P], wi[P], wf[P], wo[P];
    load_or_zero(r.gate[0] + k, ai, count);
    load_or_zero(r.gate[1] + k, af, count);
    load_or_zero(r.gate[2] + k, ag, count);
    load_or_zero(r.gate[3] + k, ao, count);
    load_or_zero(c_prev + k, cp, count);
    if constexpr (kPeepholes) load_peepholes(w_ci, w_cf, w_co, k, count, wi, wf, wo);
    for (int i = 0; i < P; ++i) {
      const int64_t slot = at + i * VW;
      const InputGates<Vec> s =
          convlstm_input_gates<Ops, kPeepholes>(ai[i], af[i], ag[i], cp[i], wi[i], wf[i]);
      s.i.store(act[0] + slot);
      s.f.store(act[1] + slot);
      s.g.store(act[2] + slot);
      convlstm_output_gate<Ops, kPeepholes>(ao[i], s.c, wo[i]).store(act[3] + slot);
      s.c.store(act[4] + slot);
    }
  };
  auto grads_pass = [&](int64_t k, int count, int64_t at) __attribute__((always_inline)) {
    Vec cp[P], wi[P], wf[P], wo[P], dh[P], dc[P];
    Vec gi[P], gf[P], gg[P], go[P], gc[P];
    load_or_zero(c_prev + k, cp, count);
    load_or_zero(grad_h ? grad_h + k : nullptr, dh, count);
    load_or_zero(grad_c ? grad_c + k : nullptr, dc, count);
    if constexpr (kPeepholes) load_peepholes(w_ci, w_cf, w_co, k, count, wi, wf, wo);
    for (int i = 0; i < P; ++i) {
      const int64_t slot = at + i * VW;
      const InputGates<Vec> s{Vec::loadu(act[0] + slot), Vec::loadu(act[1] + slot),
                              Vec::loadu(act[2] + slot), Vec::loadu(act[4] + slot)};
      const GateGrads<Vec> g = convlstm_gate_grads<Ops, kPeepholes>(
          s, Vec::loadu(act[3] + slot), cp[i], wi[i], wf[i], wo[i], dh[i], dc[i]);
      gi[i] = g.a_i;
      gf[i] = g.a_f;
      gg[i] = g.a_g;
      go[i] = g.a_o;
      gc[i] = g.c_prev;
      if constexpr (kSums) {
        const int64_t sum_at = k - k0 + i * VW;
        const int valid = std::clamp(count - i * VW, 0, VW);
        const Vec terms[3] = {g.a_i * cp[i], g.a_f * cp[i], g.a_o * g.c};
        for (int j = 0; j < 3; ++j) {
          if (valid == VW) {
            (Vec::loadu(sums[j] + sum_at) + terms[j]).store(sums[j] + sum_at);
          } else if (valid > 0) {
            (Vec::loadu(sums[j] + sum_at, valid) + terms[j]).store(sums[j] + sum_at, valid);
          }
        }
      }
    }
    store_lanes(dgate + k, gi, count);
    store_lanes(dgate + l.gate_block + k, gf, count);
    store_lanes(dgate + 2 * l.gate_block + k, gg, count);
    store_lanes(dgate + 3 * l.gate_block + k, go, count);
    store_lanes(dc_prev + k, gc, count);
  };
  in_two_passes<W>(k0, k1, gates_pass, grads_pass);
}

// Calls f(q, k0, k1) for the row spans of tile `tile`.
template <typename F>
inline void for_each_row_span(const Tiling& t, const ConvLstmLayout& l, int64_t tile, F&& f) {
  const int64_t q0 = (tile / t.col_tiles) * t.rows_per_tile;
  const int64_t k0 = (tile % t.col_tiles) * t.cols_per_tile;
  const int64_t q1 = std::min(q0 + t.rows_per_tile, l.rows);
  const int64_t k1 = std::min(k0 + t.cols_per_tile, l.cols);
  for (int64_t q = q0; q < q1; ++q) f(q, k0, k1);
}

// Elements a thread takes at least: waking a second thread costs more than computing fewer.
constexpr int64_t kMinElementsPerThread = 32768;

// Tasks of `elements` each, at least kMinElementsPerThread per chunk.
inline int64_t grain_of(int64_t elements) {
  return std::max<int64_t>(1, kMinElementsPerThread / std::max<int64_t>(elements, 1));
}

// (sample, tile) tasks, sample-major so that a thread's chunk walks memory in order.
template <typename F>
inline void parallel_over_samples_and_tiles(const ConvLstmLayout& l, const Tiling& t, F&& f) {
  const int64_t tiles = t.count();
  const int64_t grain = grain_of(t.rows_per_tile * t.cols_per_tile);
  at::parallel_for(0, l.batch * tiles, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) f(item / tiles, item % tiles);
  });
}

template <typename scalar_t, bool kPeepholes>
void forward_all(const ConvLstmGatesArgs& a) {
  const Tiling t = make_tiling(a.layout, kTileElements);
  parallel_over_samples_and_tiles(a.layout, t, [&](int64_t b, int64_t tile) {
    for_each_row_span(t, a.layout, tile, [&](int64_t q, int64_t k0, int64_t k1) {
      forward_row<scalar_t, kPeepholes>(a, b, q, k0, k1);
    });
  });
}

template <typename scalar_t, bool kPeepholes>
void backward_without_sums(const ConvLstmGatesBackwardArgs& a) {
  const Tiling t = make_tiling(a.layout, kTileElements);
  parallel_over_samples_and_tiles(a.layout, t, [&](int64_t b, int64_t tile) {
    for_each_row_span(t, a.layout, tile, [&](int64_t q, int64_t k0, int64_t k1) {
      backward_row<scalar_t, kPeepholes, false>(a, b, q, k0, k1, nullptr);
    });
  });
}

template <typename scalar_t>
void backward_with_sums(const ConvLstmGatesBackwardArgs& a) {
  using T = typename Lanes<scalar_t>::opmath;
  const ConvLstmLayout& l = a.layout;
  // Tiles small enough that every thread gets several (the sums' order does not depend on it).
  const int64_t per_sample = l.rows * l.cols;
  const int64_t share = per_sample / (4 * static_cast<int64_t>(at::get_num_threads()));
  const int64_t target = std::clamp<int64_t>(share - share % 64, kMinTileElements, kTileElements);
  const Tiling t = make_tiling(l, target);
  const int64_t tile_elements = t.rows_per_tile * t.cols_per_tile;
  const int64_t grain = grain_of(tile_elements * l.batch);
  at::parallel_for(0, t.count(), grain, [&](int64_t begin, int64_t end) {
    std::vector<T> buffer(3 * tile_elements);
    for (int64_t tile = begin; tile < end; ++tile) {
      std::fill(buffer.begin(), buffer.end(), T(0));
      const int64_t q0 = (tile / t.col_tiles) * t.rows_per_tile;
      for (int64_t b = 0; b < l.batch; ++b) {
        for_each_row_span(t, l, tile, [&](int64_t q, int64_t k0, int64_t k1) {
          T* row = buffer.data() + (q - q0) * t.cols_per_tile;
          T* const sums[3] = {row, row + tile_elements, row + 2 * tile_elements};
          backward_row<scalar_t, true, true>(a, b, q, k0, k1, sums);
        });
      }
      void* const outputs[3] = {a.grad_w_ci, a.grad_w_cf, a.grad_w_co};
      for_each_row_span(t, l, tile, [&](int64_t q, int64_t k0, int64_t k1) {
        for (int j = 0; j < 3; ++j) {
          if (outputs[j] == nullptr) continue;
          const T* from = buffer.data() + j * tile_elements + (q - q0) * t.cols_per_tile;
          std::copy(from, from + (k1 - k0), static_cast<T*>(outputs[j]) + q * l.cols + k0);
        }
      });
    }
  });
}

void convlstm_gates_kernel(const ConvLstmGatesArgs& args) {
  const bool peepholes = args.w_ci || args.w_cf || args.w_co;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.dtype, "tskd_fast::convlstm_gates",
                                  [&] {
                                    if (peepholes) {
                                      forward_all<scalar_t, true>(args);
                                    } else {
                                      forward_all<scalar_t, false>(args);
                                    }
                                  });
}

void convlstm_gates_backward_kernel(const ConvLstmGatesBackwardArgs& args) {
  const bool peepholes = args.w_ci || args.w_cf || args.w_co;
  const bool sums = args.grad_w_ci || args.grad_w_cf || args.grad_w_co;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.dtype,
                                  "tskd_fast::convlstm_gates_backward", [&] {
                                    if (sums) {
                                      backward_with_sums<scalar_t>(args);
                                    } else if (peepholes) {
                                      backward_without_sums<scalar_t, true>(args);
                                    } else {
                                      backward_without_sums<scalar_t, false>(args);
                                    }
                                  });
}

}  // namespace tskd_fast::cpu::CPU_CAPABILITY
