#pragma once

// The row kernel of the fused linear + KD loss on CUDA (op tskd_fast::fused_linear_kd_rows;
// csrc/cuda/fused_linear_kd.cu launches it, csrc/tests/test_fused_linear_kd_emulated.cpp runs it
// under a host emulation of the CUDA execution model). The contract and every formula are those
// of tskd_fast/fused_linear_kd_math.h, shared with the CPU kernel; this file only lays the passes
// A, B, C of that header out on a GPU.
//
// One block per row (vocabularies of 32k-256k columns: one row is plenty of work for a block).
// Pass A: each thread folds groups of kFlkdGroup of its columns into running FlkdStats: the
// group's maxima, then its sums relative to them (one exponential per column and distribution),
// merged into the thread's statistics with flkd_stats_merge (online softmax at group
// granularity); the block then reduces the threads' statistics. Passes B (the divergences that
// need normalised p and q) and C (the gradient, written over the student logits in place) run the
// header's scalar column functions on every column. Threads own columns in 16-byte packs when
// every row start is aligned, else single columns a block apart, so warp accesses stay coalesced.
// Math in float32 for float32, float16 and bfloat16 logits.
//
// Top-k rows (a teacher given as ids and log-probabilities): the listed student logits are saved
// to a scratch row and replaced by -inf, so that pass A over the row gives the tail's statistics
// directly (no subtraction, which would cancel when the ids hold nearly all the mass); the
// teacher's K + 1 buckets are the header's serial functions, run by every thread on the row's K
// log-probabilities (O(K) per thread: cheap next to the V / blockDim columns each thread walks
// for the K of a serving engine's top-k, tens to hundreds).
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "cuda/reduce.cuh"
#include "cuda/row_io.cuh"
#include "tskd_fast/fused_linear_kd_math.h"

namespace tskd_fast {

// The block reductions of csrc/cuda/reduce.cuh shuffle a value field by field; this overload is
// found there by argument-dependent lookup.
__device__ __forceinline__ FlkdStats<float> shfl_xor(const FlkdStats<float>& v, int offset) {
  FlkdStats<float> r;
  r.s_max = cuda::shfl_xor(v.s_max, offset);
  r.s_sum = cuda::shfl_xor(v.s_sum, offset);
  r.ce_sum = cuda::shfl_xor(v.ce_sum, offset);
  r.t_max = cuda::shfl_xor(v.t_max, offset);
  r.t_sum = cuda::shfl_xor(v.t_sum, offset);
  r.cross = cuda::shfl_xor(v.cross, offset);
  r.t_argmax = cuda::shfl_xor(v.t_argmax, offset);
  return r;
}

}  // namespace tskd_fast

namespace tskd_fast::cuda {

constexpr float kFlkdLog2e = 1.4426950408889634f;
// Columns a thread folds into its statistics at once in pass A (one or two 16-byte packs).
constexpr int kFlkdGroup = 8;

template <typename scalar_t>
struct FlkdParams {
  scalar_t* student;  // (rows, classes), unit column stride: read, then overwritten by the gradient
  int64_t student_stride;
  const scalar_t* teacher;  // (rows, classes), unit column stride; nullptr for a top-k teacher
  int64_t teacher_stride;
  const int64_t* topk_ids;     // (rows, topk) contiguous, or nullptr
  const float* topk_logprobs;  // (rows, topk) contiguous
  float* topk_student;         // (rows, topk) scratch: the student logits at the listed ids
  int64_t topk;
  const int64_t* target;  // (rows,), nullptr without labels
  const float* temperature;
  float* row_loss;
  int64_t rows;
  int64_t classes;
  FlkdOptions<float> options;  // flkd_options(...), classes = V
  bool compute_grad;
  bool aligned;  // 16-byte packs for the student and teacher rows (rows_take_packs)
};

// flkd_stats_merge with the teacher's argmax taken order-free (ties to the lower column), so
// that the block's reduction, which combines threads' interleaved columns in any order, finds
// torch.argmax's column.
struct FlkdStatsOp {
  int64_t divergence;
  float inv_tau;

  __device__ __forceinline__ FlkdStats<float> operator()(const FlkdStats<float>& a,
                                                         const FlkdStats<float>& b) const {
    FlkdStats<float> r = flkd_stats_merge(a, b, divergence, inv_tau);
    if (a.t_argmax >= 0 && b.t_argmax >= 0 && a.t_max == b.t_max) {
      r.t_argmax = a.t_argmax < b.t_argmax ? a.t_argmax : b.t_argmax;
    }
    return r;
  }
};

// Value checks that need the data run in the kernel: a host check would synchronise.
template <typename scalar_t>
__device__ __forceinline__ int64_t flkd_read_label(const FlkdParams<scalar_t>& p, int64_t row) {
  if (p.target == nullptr) return p.options.ignore_index;
  const int64_t y = p.target[row];
  CUDA_KERNEL_ASSERT_MSG(y == p.options.ignore_index || (y >= 0 && y < p.classes),
                         "tskd_fast::fused_linear_kd_rows: target labels must be in [0, classes) "
                         "or equal ignore_index");
  return y;
}

template <typename scalar_t>
__device__ __forceinline__ float flkd_read_temperature(const FlkdParams<scalar_t>& p, int64_t row) {
  const float tau = p.temperature[row];
  CUDA_KERNEL_ASSERT_MSG(tau > 0.0f && isfinite(tau),
                         "tskd_fast::fused_linear_kd_rows: temperature must be finite and > 0");
  return tau;
}

// The FlkdStats of `count` columns (first + i step, i < count) with student logits s and, when
// kTeacher, teacher logits t: the maxima first, then the sums relative to them, which is what
// flkd_stats_push would give column by column without its per-column rescaling. A group whose
// maximum is not finite (NaN, +inf, or only -inf) goes column by column through the header.
// Without a teacher the teacher fields stay empty (flkd_stats_empty) and the cross sum 0.
template <bool kTeacher>
__device__ __forceinline__ FlkdStats<float> flkd_group_stats(const float* s, const float* t,
                                                             int count, int64_t first, int64_t step,
                                                             int64_t divergence, float inv_tau,
                                                             bool ce_own) {
  float s_max = -INFINITY, t_max = -INFINITY;
#pragma unroll
  for (int i = 0; i < kFlkdGroup; ++i) {
    if (i >= count) break;
    s_max = flkd_nan_max(s_max, s[i]);
    if (kTeacher) t_max = flkd_nan_max(t_max, t[i]);
  }
  FlkdStats<float> st = flkd_stats_empty<float>();
  if (!flkd_finite(s_max) || (kTeacher && !flkd_finite(t_max))) {
    const int64_t kind = kTeacher ? divergence : int64_t(kJsd);  // kJsd: no cross sum
#pragma unroll
    for (int i = 0; i < kFlkdGroup; ++i) {  // unrolled: the group stays in registers
      if (i >= count) break;
      flkd_stats_push(st, s[i], kTeacher ? t[i] : -INFINITY, first + i * step, kind, inv_tau);
    }
    if (!kTeacher) st.t_argmax = -1;
    return st;
  }
  const float c2 = inv_tau * kFlkdLog2e;
  const bool fkl = kTeacher && divergence == kForwardKl;
  const bool rkl = kTeacher && divergence == kReverseKl;
  st.s_max = s_max;
  st.s_sum = 0.0f;
  st.ce_sum = 0.0f;
  if (kTeacher) {
    st.t_max = t_max;
    st.t_sum = 0.0f;
  }
  int arg = -1;
#pragma unroll
  for (int i = 0; i < kFlkdGroup; ++i) {
    if (i >= count) break;
    const float ds = s[i] - s_max;
    const float eb = exp2f(ds * c2);
    st.s_sum += eb;
    if (ce_own) st.ce_sum += exp2f(ds * kFlkdLog2e);
    if (kTeacher) {
      if (arg < 0 && t[i] == t_max) arg = i;
      const float ea = exp2f((t[i] - t_max) * c2);
      st.t_sum += ea;
      // A class of zero weight contributes 0, whatever the other side's logit (as the header).
      if (fkl) st.cross += ea == 0.0f ? 0.0f : ea * (t[i] - s[i]);
      if (rkl) st.cross += eb == 0.0f ? 0.0f : eb * (s[i] - t[i]);
    }
  }
  st.t_argmax = kTeacher ? first + arg * step : -1;
  return st;
}

// Pass A: the row's statistics, reduced over the block (every thread gets the same bits: the
// last stage folds the warps' partials from shared memory in one order).
template <int kBlock, bool kTeacher, typename scalar_t>
__device__ __forceinline__ FlkdStats<float> flkd_pass_a(const FlkdParams<scalar_t>& p,
                                                        const scalar_t* s, const scalar_t* t,
                                                        int lane, float inv_tau, bool ce_own) {
  constexpr int kVec = kPack<scalar_t>;
  constexpr int kPacks = kFlkdGroup / kVec;
  static_assert(kPacks * kVec == kFlkdGroup, "a group is whole packs");
  const int64_t classes = p.classes;
  const int64_t divergence = p.options.divergence;
  const FlkdStatsOp op{divergence, inv_tau};
  FlkdStats<float> st = flkd_stats_empty<float>();
  float sv[kFlkdGroup], tv[kFlkdGroup];
  if (p.aligned) {
    for (int64_t first = int64_t(lane) * kFlkdGroup; first < classes;
         first += int64_t(kBlock) * kFlkdGroup) {
#pragma unroll
      for (int pk = 0; pk < kPacks; ++pk) {
        const int64_t k = first + pk * kVec;
        // classes is a multiple of the pack: a group's packs are whole or absent.
        Pack<scalar_t> sp{}, tp{};
        if (k < classes) {
          sp = load_pack(s + k);
          if (kTeacher) tp = load_pack(t + k);
        }
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          sv[pk * kVec + j] = static_cast<float>(sp.v[j]);
          tv[pk * kVec + j] = static_cast<float>(tp.v[j]);
        }
      }
      const int count =
          static_cast<int>(classes - first < kFlkdGroup ? classes - first : int64_t(kFlkdGroup));
      st = op(st, flkd_group_stats<kTeacher>(sv, tv, count, first, 1, divergence, inv_tau, ce_own));
    }
  } else {
    for (int64_t first = lane; first < classes; first += int64_t(kBlock) * kFlkdGroup) {
      int count = 0;
#pragma unroll
      for (int i = 0; i < kFlkdGroup; ++i) {
        const int64_t k = first + int64_t(i) * kBlock;
        if (k < classes) {
          sv[i] = static_cast<float>(s[k]);
          tv[i] = kTeacher ? static_cast<float>(t[k]) : 0.0f;
          count = i + 1;
        } else {
          sv[i] = tv[i] = 0.0f;
        }
      }
      st = op(st, flkd_group_stats<kTeacher>(sv, tv, count, first, kBlock, divergence, inv_tau,
                                             ce_own));
    }
  }
  return group_reduce<kBlock>(st, op);
}

// Calls f(k, s_k, t_k) for the columns lane `lane` owns (t_k = 0 when load_teacher is false).
template <int kBlock, typename scalar_t, typename F>
__device__ __forceinline__ void flkd_for_each_column(const scalar_t* s, const scalar_t* t,
                                                     int64_t classes, int lane, bool aligned,
                                                     bool load_teacher, F&& f) {
  constexpr int kVec = kPack<scalar_t>;
  if (aligned) {
    for (int64_t k = int64_t(lane) * kVec; k < classes; k += int64_t(kBlock) * kVec) {
      const Pack<scalar_t> sp = load_pack(s + k);
      Pack<scalar_t> tp{};
      if (load_teacher) tp = load_pack(t + k);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        f(k + j, static_cast<float>(sp.v[j]), load_teacher ? static_cast<float>(tp.v[j]) : 0.0f);
      }
    }
  } else {
    for (int64_t k = lane; k < classes; k += kBlock) {
      f(k, static_cast<float>(s[k]), load_teacher ? static_cast<float>(t[k]) : 0.0f);
    }
  }
}

// s_k = f(k, s_k, t_k) in place for the columns lane `lane` owns: each thread reads a column and
// then writes it, so no other thread's read can see a gradient.
template <int kBlock, typename scalar_t, typename F>
__device__ __forceinline__ void flkd_map_in_place(scalar_t* s, const scalar_t* t, int64_t classes,
                                                  int lane, bool aligned, bool load_teacher,
                                                  F&& f) {
  constexpr int kVec = kPack<scalar_t>;
  if (aligned) {
    for (int64_t k = int64_t(lane) * kVec; k < classes; k += int64_t(kBlock) * kVec) {
      Pack<scalar_t> sp = load_pack(s + k);
      Pack<scalar_t> tp{};
      if (load_teacher) tp = load_pack(t + k);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        sp.v[j] = static_cast<scalar_t>(f(k + j, static_cast<float>(sp.v[j]),
                                          load_teacher ? static_cast<float>(tp.v[j]) : 0.0f));
      }
      store_pack(s + k, sp);
    }
  } else {
    for (int64_t k = lane; k < classes; k += kBlock) {
      s[k] = static_cast<scalar_t>(
          f(k, static_cast<float>(s[k]), load_teacher ? static_cast<float>(t[k]) : 0.0f));
    }
  }
}

template <int kBlock, typename scalar_t>
__device__ __forceinline__ void flkd_fill_row(const FlkdParams<scalar_t>& p, scalar_t* s, int lane,
                                              float value) {
  const scalar_t x = static_cast<scalar_t>(value);
  for (int64_t k = lane; k < p.classes; k += kBlock) s[k] = x;
}

// A row of a top-k teacher (tskd_fast/fused_linear_kd_math.h, top-k teacher), label not ignored.
template <int kBlock, typename scalar_t>
__device__ __forceinline__ void flkd_topk_row(const FlkdParams<scalar_t>& p, int64_t row,
                                              scalar_t* s, int lane, int64_t label, float tau) {
  const FlkdOptions<float>& o = p.options;
  const int64_t kk = p.topk;
  const int64_t* ids = p.topk_ids + row * kk;
  const float* lp = p.topk_logprobs + row * kk;
  float* saved = p.topk_student + row * kk;
  const bool has_target = p.target != nullptr;
  const bool label_used = has_target && label != o.ignore_index;
  const float inv_tau = 1.0f / tau;
  const bool ce_own = flkd_ce_own_exp(o.ce_weight, has_target, tau);

  // The listed student logits: saved, folded into their own statistics, then masked.
  FlkdStats<float> listed = flkd_stats_empty<float>();
  for (int64_t i = lane; i < kk; i += kBlock) {
    const int64_t id = ids[i];
    CUDA_KERNEL_ASSERT_MSG(id >= 0 && id < p.classes,
                           "tskd_fast::fused_linear_kd_rows: topk_ids must be in [0, classes)");
    const float s_id = static_cast<float>(s[id]);
    saved[i] = s_id;
    flkd_stats_push(listed, s_id, -INFINITY, id, int64_t(kJsd), inv_tau);
  }
  const float s_label = label_used ? static_cast<float>(s[label]) : 0.0f;
  __syncthreads();  // every read of a listed logit before the first -inf
  for (int64_t i = lane; i < kk; i += kBlock) s[ids[i]] = static_cast<scalar_t>(-INFINITY);
  __syncthreads();

  const FlkdStatsOp op{int64_t(kJsd), inv_tau};
  const FlkdStats<float> tail = flkd_pass_a<kBlock, false>(
      p, s, static_cast<const scalar_t*>(nullptr), lane, inv_tau, ce_own);
  listed = group_reduce<kBlock>(listed, op);
  // flkd_topk_student's result, from the two parts' statistics: the student over all V columns,
  // and the tail's sum relative to its maximum.
  const FlkdStats<float> all = op(tail, listed);
  const float tail_sum = flkd_rescale(tail.s_max, all.s_max, inv_tau) * tail.s_sum;

  FlkdTopkRow<float> tk{};
  FlkdRow<float> r = flkd_topk_setup(tk, all, o, lp, kk, tau, has_target, label);
  r.s_at_label = s_label;
  float* loss = p.row_loss + row;
  if (!r.finite) {  // uniform: every thread holds the same statistics
    if (lane == 0) *loss = NAN;
    if (p.compute_grad) flkd_fill_row<kBlock>(p, s, lane, NAN);
    return;
  }
  Sums<2> sums = zero_sums<2>();
  for (int64_t i = lane; i < kk; i += kBlock) {
    const FlkdTerm<float> term = flkd_topk_listed_term(tk, r, o, lp[i], saved[i]);
    sums[0] += term.loss;
    sums[1] += term.u;
  }
  sums = group_reduce<kBlock>(sums, SumOp{});
  const FlkdTerm<float> tail_term = flkd_topk_tail_term(tk, r, o, tail_sum);
  const FlkdSums<float> total{sums[0] + tail_term.loss, sums[1] + tail_term.u};
  const FlkdResult<float> res = flkd_result_of_sums(total, o.divergence);
  if (lane == 0) *loss = flkd_row_loss(r, res, o);
  if (!p.compute_grad) return;

  const FlkdGradCoefs<float> c = flkd_grad_coefs(r, res, o);
  const float tail_coef = flkd_topk_tail_coef(tk, c);
  const bool ce = c.ce != 0.0f;
  const float ce_shift = r.s_max + r.ce_logz;
  const bool ce_own_c = ce && tau != 1.0f;
  // Every column as a tail column (the listed ones hold -inf: 0), then the listed ids, which
  // overwrite the label's column when it is listed.
  flkd_map_in_place<kBlock>(s, static_cast<const scalar_t*>(nullptr), p.classes, lane, p.aligned,
                            false, [&](int64_t k, float sk, float) {
                              const float q = math_exp(flkd_log_q(r, sk));
                              float g = tail_coef * q;
                              if (ce) g += c.ce * (ce_own_c ? math_exp(sk - ce_shift) : q);
                              return k == r.label ? flkd_grad_label(c, g) : g;
                            });
  __syncthreads();  // the listed columns' zeros before their gradients
  for (int64_t i = lane; i < kk; i += kBlock) {
    float g = flkd_topk_listed_grad(tk, r, o, c, lp[i], saved[i]);
    if (ids[i] == r.label) g = flkd_grad_label(c, g);
    s[ids[i]] = static_cast<scalar_t>(g);
  }
}

// One block of kBlock threads per row.
template <typename scalar_t, int kBlock>
__global__ void __launch_bounds__(kBlock)
    fused_linear_kd_rows_kernel(const FlkdParams<scalar_t> p) {
  const int64_t row = blockIdx.x;
  const int lane = threadIdx.x;
  const FlkdOptions<float>& o = p.options;
  scalar_t* s = p.student + row * p.student_stride;
  const bool has_target = p.target != nullptr;
  const int64_t label = flkd_read_label(p, row);
  const float tau = flkd_read_temperature(p, row);
  float* loss = p.row_loss + row;
  if (has_target && label == o.ignore_index) {
    if (lane == 0) *loss = 0.0f;
    if (p.compute_grad) flkd_fill_row<kBlock>(p, s, lane, 0.0f);
    return;
  }
  if (p.topk_ids != nullptr) {
    flkd_topk_row<kBlock>(p, row, s, lane, label, tau);
    return;
  }
  const scalar_t* t = p.teacher + row * p.teacher_stride;
  const float inv_tau = 1.0f / tau;
  const bool ce_own = flkd_ce_own_exp(o.ce_weight, has_target, tau);
  const FlkdStats<float> st = flkd_pass_a<kBlock, true>(p, s, t, lane, inv_tau, ce_own);
  FlkdRow<float> r = flkd_row_setup(st, o, tau, has_target, label);
  if (!r.finite) {  // uniform over the block
    if (lane == 0) *loss = NAN;
    if (p.compute_grad) flkd_fill_row<kBlock>(p, s, lane, NAN);
    return;
  }
  // Single columns from global memory (L1/L2 hits), read by every thread before pass C writes.
  if (r.label >= 0) {
    r.s_at_label = static_cast<float>(s[r.label]);
    r.t_at_label = static_cast<float>(t[r.label]);
  }
  if (r.argmax >= 0) r.s_at_argmax = static_cast<float>(s[r.argmax]);
  const bool smoothed = r.target == kTargetSmoothed;
  FlkdResult<float> res;
  if (flkd_needs_sums_pass(r, o.divergence)) {
    Sums<2> sums = zero_sums<2>();
    flkd_for_each_column<kBlock>(s, t, p.classes, lane, p.aligned, !smoothed,
                                 [&](int64_t k, float sk, float tk) {
                                   const FlkdTerm<float> term = flkd_term_column(r, o, k, sk, tk);
                                   sums[0] += term.loss;
                                   sums[1] += term.u;
                                 });
    sums = group_reduce<kBlock>(sums, SumOp{});
    res = flkd_result_of_sums(FlkdSums<float>{sums[0], sums[1]}, o.divergence);
  } else {
    res = flkd_result_online(flkd_online_divergence(st, r, o.divergence), o.divergence);
  }
  if (lane == 0) *loss = flkd_row_loss(r, res, o);
  if (!p.compute_grad) return;

  const FlkdGradCoefs<float> c = flkd_grad_coefs(r, res, o);
  __syncthreads();  // the single columns above are read before any thread overwrites them
  flkd_map_in_place<kBlock>(
      s, t, p.classes, lane, p.aligned, !smoothed,
      [&](int64_t k, float sk, float tk) { return flkd_grad_column(r, o, c, k, sk, tk); });
}

// Threads per row by row length: more threads for longer rows, up to 512 (enough loads in
// flight per SM at two to four blocks per SM). Calls launch(kernel, blocks, threads_per_block).
template <typename scalar_t, typename Launch>
void launch_fused_linear_kd_rows(const FlkdParams<scalar_t>& p, Launch&& launch) {
  if (p.classes <= 4096) return launch(fused_linear_kd_rows_kernel<scalar_t, 128>, p.rows, 128);
  if (p.classes <= 32768) return launch(fused_linear_kd_rows_kernel<scalar_t, 256>, p.rows, 256);
  launch(fused_linear_kd_rows_kernel<scalar_t, 512>, p.rows, 512);
}

}  // namespace tskd_fast::cuda
