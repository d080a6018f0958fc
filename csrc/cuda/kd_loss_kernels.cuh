#pragma once

// The fused KD-loss kernels (csrc/cuda/kd_loss.cu launches them; csrc/tests/ runs them under a
// host emulation of the CUDA execution model). Row math: tskd_fast/kd_loss_math.h, shared with
// the CPU kernel (docs/methods.md §1.1-§1.3).
//   Short rows (C <= 1024): 4 to 32 lanes of a warp per row, several rows per block. The row is
//   read once into registers and all three passes (maxima; sums; gradient) run on registers,
//   so the logits cross DRAM once and the gradient once.
//   Long rows: a whole block per row, looping over the row in three passes (maxima; sums;
//   gradient with the exponentials recomputed rather than kept, which would need C floats of
//   shared memory per row); the later passes mostly hit L2.
// Exponentials are exp2 with log2(e) / tau folded into one multiply, as on the CPU. The
// semantics are the CPU kernel's: non-finite row maxima make the whole row NaN, -inf teacher
// logits are classes without target mass, the probability shift swaps the teacher's argmax and
// label columns by remapping indices, and at tau == 1 the CE term reuses the KD exponentials.
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "cuda/reduce.cuh"
#include "cuda/row_io.cuh"
#include "tskd_fast/kd_loss_math.h"

namespace tskd_fast::cuda {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kShortRowBlock = 128;
// Registers per lane for each of z and v on the short-row path; beyond 32 lanes x 32 columns
// a row takes the block path.
constexpr int kMaxItemsPerLane = 32;

template <typename scalar_t>
struct KdParams {
  const scalar_t* student;
  const scalar_t* teacher;
  int64_t student_stride;
  int64_t teacher_stride;
  const int64_t* target;  // nullptr without labels
  const float* temperature;
  float* row_loss;
  scalar_t* row_grad;  // contiguous (rows, classes), nullptr without compute_grad
  int64_t rows;
  int64_t classes;
  int64_t ka;
  int64_t ignore_index;
  SmoothedTarget<float> smoothed;
  float ce_weight;
  float grad_scale;  // factor of the written gradient (1/B for batchmean)
  bool scale_tau2;
  bool aligned;      // 16-byte packs for both inputs and the gradient
  bool need_argmax;  // labels and knowledge adjustment: the teacher's argmax picks the target
};

// Everything about one row that the passes after the maxima need.
struct KdRow {
  KdRowInfo<float> info;
  float teacher_max;
  float scale2;    // exp((x - max) / tau) = exp2((x - max) * scale2)
  int64_t label;   // -1 when the row's label is not used (no target, or ignore_index)
  int64_t argmax;  // the teacher's argmax on swapped rows, else -1
  bool finite;     // both row maxima finite; otherwise the row's loss and gradient are NaN
  bool smoothed;
  bool swapped;
  bool ce_own_exp;  // the CE term needs exp(z - max z) of its own (tau != 1)
};

// Sums gathered in pass 2, reduced together.
enum : int { kStudentExp = 0, kTeacherExp, kCross, kStudentShift, kCeExp, kNumSums };

// Value checks that need the data run in the kernel: a host check would have to synchronise.
template <typename scalar_t>
__device__ __forceinline__ int64_t read_label(const KdParams<scalar_t>& p, int64_t row) {
  if (p.target == nullptr) return p.ignore_index;
  const int64_t y = p.target[row];
  CUDA_KERNEL_ASSERT_MSG(y == p.ignore_index || (y >= 0 && y < p.classes),
                         "tskd_fast::kd_loss: target labels must be in [0, classes) or equal "
                         "ignore_index");
  return y;
}

template <typename scalar_t>
__device__ __forceinline__ float read_temperature(const KdParams<scalar_t>& p, int64_t row) {
  const float tau = p.temperature[row];
  CUDA_KERNEL_ASSERT_MSG(tau > 0.0f && isfinite(tau),
                         "tskd_fast::kd_loss: temperature must be finite and > 0");
  return tau;
}

template <typename scalar_t>
__device__ __forceinline__ KdRow kd_row_setup(const KdParams<scalar_t>& p, const scalar_t* z,
                                              const scalar_t* v, float student_max,
                                              const MaxIndex& teacher, int64_t label, float tau) {
  KdRow r;
  r.info = KdRowInfo<float>{};
  r.finite = isfinite(student_max) && isfinite(teacher.value);
  r.teacher_max = teacher.value;
  const bool label_used = p.target != nullptr && label != p.ignore_index;
  r.label = label_used ? label : -1;
  const int64_t argmax = (label_used && p.ka != kKaNone) ? teacher.index : -1;
  r.info.target = kd_row_target(p.ka, label, p.ignore_index, argmax);
  r.smoothed = r.info.target == kTargetSmoothed;
  r.swapped = r.info.target == kTargetSwapped;
  r.argmax = r.swapped ? argmax : -1;
  r.info.ce_active = label_used && p.ce_weight != 0.0f;
  r.info.inv_tau = 1.0f / tau;
  r.info.scale = p.scale_tau2 ? tau * tau : 1.0f;
  r.info.student_max = student_max;
  r.scale2 = r.info.inv_tau * kLog2e;
  // Single columns come from global memory (L1/L2 hits): cheaper than finding their owner lane.
  if (r.finite && label_used) r.info.student_at_label = static_cast<float>(z[label]);
  if (r.finite && r.swapped) {
    r.info.student_at_argmax = static_cast<float>(z[argmax]);
    // The same expression as pass 2's, so the swapped teacher is an exact permutation.
    r.info.teacher_exp_at_label = exp2f((static_cast<float>(v[label]) - r.teacher_max) * r.scale2);
  }
  r.ce_own_exp = r.info.ce_active && tau != 1.0f;
  return r;
}

__device__ __forceinline__ void kd_accumulate(const KdRow& r, float z, float v, Sums<kNumSums>& s) {
  const float dz = z - r.info.student_max;
  s[kStudentExp] += exp2f(dz * r.scale2);
  if (r.smoothed) {
    s[kStudentShift] += dz;
  } else {
    const float dv = v - r.teacher_max;
    const float ea = exp2f(dv * r.scale2);
    s[kTeacherExp] += ea;
    // exp(a) (a - b) with a - b = (dv - dz) / tau: the 1/tau is applied once to the sum.
    s[kCross] += kl_cross_term(ea, dv, dz);
  }
  if (r.ce_own_exp) s[kCeExp] += exp2f(dz * kLog2e);
}

__device__ __forceinline__ KdRowSums<float> kd_row_sums(const KdRow& r, const Sums<kNumSums>& s) {
  KdRowSums<float> out;
  out.student_exp = s[kStudentExp];
  out.teacher_exp = s[kTeacherExp];
  out.cross = s[kCross] * r.info.inv_tau;
  // sum_k (z_k - max z) / tau directly, not sum z - C max z: no cancellation on long rows.
  out.student_scaled = s[kStudentShift] * r.info.inv_tau;
  out.ce_exp = r.ce_own_exp ? s[kCeExp] : s[kStudentExp];
  return out;
}

__device__ __forceinline__ float kd_grad_at(const KdRow& r, const KdGradCoefs<float>& c,
                                            const SmoothedTarget<float>& st, int64_t k, float z,
                                            float v) {
  const float dz = z - r.info.student_max;
  const float eb = exp2f(dz * r.scale2);
  float ea = 0.0f;
  if (!r.smoothed) {
    // The swapped teacher holds v_label at the argmax and max v (exponent 0) at the label.
    if (k == r.argmax) {
      ea = r.info.teacher_exp_at_label;
    } else if (r.swapped && k == r.label) {
      ea = 1.0f;
    } else {
      ea = exp2f((v - r.teacher_max) * r.scale2);
    }
  }
  const bool is_label = k == r.label;
  const float ez = r.ce_own_exp ? exp2f(dz * kLog2e) : eb;
  return kd_grad_element(c, eb, ea, is_label ? st.on : st.off, ez, is_label);
}

// Short rows: kLanes lanes per row, each holding kChunks packs of kPack columns in registers.
// Column of register slot (c, j): with packs, lane-major packs ((c kLanes + lane) kPack + j);
// without, lane-minor columns ((c kPack + j) kLanes + lane). Both visit a lane's columns in
// increasing order and keep warp accesses coalesced.
template <typename scalar_t, int kLanes, int kChunks>
__global__ void __launch_bounds__(kShortRowBlock) kd_loss_short_rows(const KdParams<scalar_t> p) {
  constexpr int kVec = kPack<scalar_t>;
  constexpr int kItems = kChunks * kVec;
  constexpr int kRowsPerBlock = kShortRowBlock / kLanes;
  const int lane = threadIdx.x % kLanes;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kLanes;
  const bool in_batch = row < p.rows;
  // Rows past the batch still join the reductions (whose shuffles name the whole warp), as
  // empty rows that store nothing.
  const int classes = in_batch ? static_cast<int>(p.classes) : 0;
  const int64_t label = in_batch ? read_label(p, row) : p.ignore_index;
  const float tau = in_batch ? read_temperature(p, row) : 1.0f;
  const scalar_t* z = p.student + (in_batch ? row : 0) * p.student_stride;
  const scalar_t* v = p.teacher + (in_batch ? row : 0) * p.teacher_stride;

  auto column = [&](int c, int j) {
    return p.aligned ? (c * kLanes + lane) * kVec + j : (c * kVec + j) * kLanes + lane;
  };
  float zr[kItems], vr[kItems];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (p.aligned) {
      const int k0 = column(c, 0);
      Pack<scalar_t> zp{}, vp{};
      if (k0 < classes) {
        zp = load_pack(z + k0);
        vp = load_pack(v + k0);
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        zr[c * kVec + j] = static_cast<float>(zp.v[j]);
        vr[c * kVec + j] = static_cast<float>(vp.v[j]);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const int k = column(c, j);
        zr[c * kVec + j] = k < classes ? static_cast<float>(z[k]) : 0.0f;
        vr[c * kVec + j] = k < classes ? static_cast<float>(v[k]) : 0.0f;
      }
    }
  }

  // Pass 1: row maxima, and the teacher's first argmax when knowledge adjustment needs it.
  float student_max = -INFINITY;
  MaxIndex teacher = max_index_init();
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const int k = column(c, j);
      if (k >= classes) continue;
      const int i = c * kVec + j;
      student_max = nan_max(student_max, zr[i]);
      if (p.need_argmax) {
        teacher = max_first(teacher, MaxIndex{vr[i], k});
      } else {
        teacher.value = nan_max(teacher.value, vr[i]);
      }
    }
  }
  student_max = group_reduce<kLanes>(student_max, NanMaxOp{});
  if (p.need_argmax) {
    teacher = group_reduce<kLanes>(teacher, MaxFirstOp{});
  } else {
    teacher.value = group_reduce<kLanes>(teacher.value, NanMaxOp{});
  }
  const KdRow r = kd_row_setup(p, z, v, student_max, teacher, label, tau);

  // Pass 2: the sums of KdRowSums.
  Sums<kNumSums> s = zero_sums<kNumSums>();
  if (r.finite) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        if (column(c, j) < classes) kd_accumulate(r, zr[c * kVec + j], vr[c * kVec + j], s);
      }
    }
  }
  s = group_reduce<kLanes>(s, SumOp{});
  const KdRowSums<float> sums = kd_row_sums(r, s);
  if (in_batch && lane == 0) {
    p.row_loss[row] = r.finite ? kd_row_loss(sums, r.info, p.smoothed, p.ce_weight) : NAN;
  }
  if (p.row_grad == nullptr || !in_batch) return;

  // Pass 3: the gradient, from the registers.
  scalar_t* grad = p.row_grad + row * p.classes;
  const KdGradCoefs<float> coefs = kd_grad_coefs(sums, r.info, p.ce_weight, p.grad_scale);
  auto grad_at = [&](int k, int i) {
    return r.finite ? kd_grad_at(r, coefs, p.smoothed, k, zr[i], vr[i]) : NAN;
  };
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (p.aligned) {
      const int k0 = column(c, 0);
      if (k0 >= classes) continue;
      Pack<scalar_t> out;
#pragma unroll
      for (int j = 0; j < kVec; ++j)
        out.v[j] = static_cast<scalar_t>(grad_at(k0 + j, c * kVec + j));
      store_pack(grad + k0, out);
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const int k = column(c, j);
        if (k < classes) grad[k] = static_cast<scalar_t>(grad_at(k, c * kVec + j));
      }
    }
  }
}

// Long rows: one block of kBlock threads per row, three passes over global memory.
template <typename scalar_t, int kBlock>
__global__ void __launch_bounds__(kBlock) kd_loss_long_rows(const KdParams<scalar_t> p) {
  const int64_t row = blockIdx.x;
  const int lane = threadIdx.x;
  const int64_t classes = p.classes;
  const int64_t label = read_label(p, row);
  const float tau = read_temperature(p, row);
  const scalar_t* z = p.student + row * p.student_stride;
  const scalar_t* v = p.teacher + row * p.teacher_stride;
  scalar_t* grad = p.row_grad != nullptr ? p.row_grad + row * classes : nullptr;

  float student_max = -INFINITY;
  MaxIndex teacher = max_index_init();
  if (p.need_argmax) {
    for_each_column<kBlock>(z, v, classes, lane, p.aligned, true,
                            [&](int64_t k, float zk, float vk) {
                              student_max = nan_max(student_max, zk);
                              teacher = max_first(teacher, MaxIndex{vk, k});
                            });
    student_max = group_reduce<kBlock>(student_max, NanMaxOp{});
    teacher = group_reduce<kBlock>(teacher, MaxFirstOp{});
  } else {
    for_each_column<kBlock>(z, v, classes, lane, p.aligned, true, [&](int64_t, float zk, float vk) {
      student_max = nan_max(student_max, zk);
      teacher.value = nan_max(teacher.value, vk);
    });
    student_max = group_reduce<kBlock>(student_max, NanMaxOp{});
    teacher.value = group_reduce<kBlock>(teacher.value, NanMaxOp{});
  }
  const KdRow r = kd_row_setup(p, z, v, student_max, teacher, label, tau);
  if (!r.finite) {  // uniform over the block: every thread saw the same maxima
    if (lane == 0) p.row_loss[row] = NAN;
    if (grad != nullptr) {
      map_columns<kBlock>(z, v, grad, classes, lane, p.aligned, false, false,
                          [](int64_t, float, float) { return NAN; });
    }
    return;
  }

  Sums<kNumSums> s = zero_sums<kNumSums>();
  for_each_column<kBlock>(z, v, classes, lane, p.aligned, !r.smoothed,
                          [&](int64_t, float zk, float vk) { kd_accumulate(r, zk, vk, s); });
  s = group_reduce<kBlock>(s, SumOp{});
  const KdRowSums<float> sums = kd_row_sums(r, s);
  if (lane == 0) p.row_loss[row] = kd_row_loss(sums, r.info, p.smoothed, p.ce_weight);
  if (grad == nullptr) return;

  const KdGradCoefs<float> coefs = kd_grad_coefs(sums, r.info, p.ce_weight, p.grad_scale);
  map_columns<kBlock>(
      z, v, grad, classes, lane, p.aligned, true, !r.smoothed,
      [&](int64_t k, float zk, float vk) { return kd_grad_at(r, coefs, p.smoothed, k, zk, vk); });
}

// Which kernel a row length takes: the fewest lanes (at least 4) whose registers hold the row,
// else a block per row (512 threads once a row has more than 8192 columns). Calls
// launch(kernel, blocks, threads_per_block).
template <typename scalar_t, typename Launch>
void launch_kd_loss(const KdParams<scalar_t>& p, Launch&& launch) {
  constexpr int kVec = kPack<scalar_t>;
  const int64_t packs = (p.classes + kVec - 1) / kVec;
  auto short_rows = [&](auto kernel, int lanes) {
    const int64_t rows_per_block = kShortRowBlock / lanes;
    launch(kernel, (p.rows + rows_per_block - 1) / rows_per_block, kShortRowBlock);
  };
  if (packs <= 4) return short_rows(kd_loss_short_rows<scalar_t, 4, 1>, 4);
  if (packs <= 8) return short_rows(kd_loss_short_rows<scalar_t, 8, 1>, 8);
  if (packs <= 16) return short_rows(kd_loss_short_rows<scalar_t, 16, 1>, 16);
  if (packs <= 32) return short_rows(kd_loss_short_rows<scalar_t, 32, 1>, 32);
  if (packs <= 64) return short_rows(kd_loss_short_rows<scalar_t, 32, 2>, 32);
  if constexpr (4 * kVec <= kMaxItemsPerLane) {
    if (packs <= 128) return short_rows(kd_loss_short_rows<scalar_t, 32, 4>, 32);
  }
  if constexpr (8 * kVec <= kMaxItemsPerLane) {
    if (packs <= 256) return short_rows(kd_loss_short_rows<scalar_t, 32, 8>, 32);
  }
  if (p.classes <= 8192) return launch(kd_loss_long_rows<scalar_t, 256>, p.rows, 256);
  launch(kd_loss_long_rows<scalar_t, 512>, p.rows, 512);
}

}  // namespace tskd_fast::cuda
