#pragma once

// Per-row DTD weights on CUDA GPUs (csrc/cuda/dtd.cu launches the kernel; csrc/tests/
// runs it under a host emulation), with the row math of tskd_fast/dtd_math.h shared with the
// CPU kernel (docs/methods.md §1.4, §1.5):
//   flsw: w = (1 - cos(z, v))^gamma, v probability-shifted (ka = ps) where the teacher's argmax
//         misses the label; one pass gathers z.v, |z|^2, |v|^2 and the teacher's argmax, and
//         the swap enters as a correction of z.v;
//   cwsm: w = 1 / (max softmax(z) + 1e-3); a max pass, then a sum pass (an L1/L2 re-read).
// A group of 4 to 32 lanes per row for rows up to 4096 columns (several rows per block), a
// block of 256 threads per row beyond.
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "cuda/reduce.cuh"
#include "cuda/row_io.cuh"
#include "tskd_fast/dtd_math.h"
#include "tskd_fast/kd_loss_math.h"

namespace tskd_fast::cuda {

constexpr int kSmallGroupBlock = 128;
constexpr int kLongRowBlock = 256;

template <typename scalar_t>
struct DtdParams {
  const scalar_t* student;
  const scalar_t* teacher;
  int64_t student_stride;
  int64_t teacher_stride;
  const int64_t* target;  // nullptr without labels
  float* weight;
  int64_t rows;
  int64_t classes;
  int64_t mode;  // 0 flsw, 1 cwsm
  float gamma;
  int64_t ka;
  int64_t ignore_index;
  bool aligned;  // 16-byte packs for both inputs
};

template <typename scalar_t, int kGroup, int kBlock>
__global__ void __launch_bounds__(kBlock) dtd_weight_rows(const DtdParams<scalar_t> p) {
  constexpr int kRowsPerBlock = kBlock / kGroup;
  const int lane = threadIdx.x % kGroup;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kGroup;
  const bool in_batch = row < p.rows;
  // Rows past the batch join the reductions as empty rows and store nothing.
  const int64_t classes = in_batch ? p.classes : 0;
  const scalar_t* z = p.student + (in_batch ? row : 0) * p.student_stride;
  const scalar_t* v = p.teacher + (in_batch ? row : 0) * p.teacher_stride;
  // Labels are read (and so checked) only with knowledge adjustment, as on the CPU.
  int64_t label = p.ignore_index;
  if (in_batch && p.target != nullptr && p.ka != kKaNone) {
    label = p.target[row];
    CUDA_KERNEL_ASSERT_MSG(label == p.ignore_index || (label >= 0 && label < p.classes),
                           "tskd_fast::dtd_weight: target labels must be in [0, classes) or "
                           "equal ignore_index");
  }

  float weight;
  if (p.mode == 0) {
    const bool shift = p.target != nullptr && p.ka == kKaProbShift;  // uniform over the launch
    Sums<3> s = zero_sums<3>();
    MaxIndex teacher = max_index_init();
    for_each_column<kGroup>(z, v, classes, lane, p.aligned, true,
                            [&](int64_t k, float zk, float vk) {
                              s[0] = fmaf(zk, vk, s[0]);
                              s[1] = fmaf(zk, zk, s[1]);
                              s[2] = fmaf(vk, vk, s[2]);
                              if (shift) teacher = max_first(teacher, MaxIndex{vk, k});
                            });
    s = group_reduce<kGroup>(s, SumOp{});
    if (shift) teacher = group_reduce<kGroup>(teacher, MaxFirstOp{});
    CosineSums<float> sums{s[0], s[1], s[2]};
    if (shift && in_batch && label != p.ignore_index &&
        kd_row_target(p.ka, label, p.ignore_index, teacher.index) == kTargetSwapped) {
      const int64_t j = teacher.index;
      sums.dot += swapped_dot_correction(static_cast<float>(z[j]), static_cast<float>(z[label]),
                                         static_cast<float>(v[j]), static_cast<float>(v[label]));
    }
    weight = flsw_weight(sums, p.gamma);
  } else {
    float student_max = -INFINITY;
    for_each_column<kGroup>(z, v, classes, lane, p.aligned, false, [&](int64_t, float zk, float) {
      student_max = nan_max(student_max, zk);
    });
    student_max = group_reduce<kGroup>(student_max, NanMaxOp{});
    Sums<1> s = zero_sums<1>();
    for_each_column<kGroup>(z, v, classes, lane, p.aligned, false,
                            [&](int64_t, float zk, float) { s[0] += expf(zk - student_max); });
    s = group_reduce<kGroup>(s, SumOp{});
    weight = cwsm_weight(s[0]);
  }
  if (in_batch && lane == 0) p.weight[row] = weight;
}

// Calls launch(kernel, blocks, threads_per_block) with the row group that fits the row length.
template <typename scalar_t, typename Launch>
void launch_dtd_weight(const DtdParams<scalar_t>& p, Launch&& launch) {
  constexpr int kVec = kPack<scalar_t>;
  const int64_t packs = (p.classes + kVec - 1) / kVec;
  auto rows = [&](auto kernel, int group, int block) {
    const int64_t rows_per_block = block / group;
    launch(kernel, (p.rows + rows_per_block - 1) / rows_per_block, block);
  };
  if (packs <= 4) return rows(dtd_weight_rows<scalar_t, 4, kSmallGroupBlock>, 4, kSmallGroupBlock);
  if (packs <= 8) return rows(dtd_weight_rows<scalar_t, 8, kSmallGroupBlock>, 8, kSmallGroupBlock);
  if (packs <= 16) {
    return rows(dtd_weight_rows<scalar_t, 16, kSmallGroupBlock>, 16, kSmallGroupBlock);
  }
  if (p.classes <= 4096) {
    return rows(dtd_weight_rows<scalar_t, 32, kSmallGroupBlock>, 32, kSmallGroupBlock);
  }
  rows(dtd_weight_rows<scalar_t, kLongRowBlock, kLongRowBlock>, kLongRowBlock, kLongRowBlock);
}

}  // namespace tskd_fast::cuda
