#pragma once

// Per-row DTD weights on the CPU (docs/methods.md §1.4, §1.5):
//   flsw: w = (1 - cos(z, v))^gamma with cos = z.v / ((|z| + 1e-4) (|v| + 1e-4)), where v is the
//         probability-shifted teacher row when ka = ps and the teacher's argmax misses the label;
//   cwsm: w = 1 / (max softmax(z) + 1e-3).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "cpu/dtd_args.h"
#include "cpu/vec_lanes.h"
#include "tskd_fast/dtd_math.h"
#include "tskd_fast/kd_loss_math.h"

namespace tskd_fast::cpu::CPU_CAPABILITY {

template <typename scalar_t>
typename Lanes<scalar_t>::opmath flsw_row(const DtdWeightArgs& a, const scalar_t* z,
                                          const scalar_t* v, int64_t label) {
  using L = Lanes<scalar_t>;
  using T = typename L::opmath;
  using Vec = typename L::Vec;
  const int64_t full = a.classes - a.classes % L::kWidth;
  Vec dot(0), zz(0), vv(0);
  Vec zp[L::kParts], vp[L::kParts];
  for (int64_t k = 0; k < full; k += L::kWidth) {
    L::load(z + k, zp);
    L::load(v + k, vp);
    for (int i = 0; i < L::kParts; ++i) {
      dot = at::vec::fmadd(zp[i], vp[i], dot);
      zz = at::vec::fmadd(zp[i], zp[i], zz);
      vv = at::vec::fmadd(vp[i], vp[i], vv);
    }
  }
  CosineSums<T> s{reduce_sum(dot), reduce_sum(zz), reduce_sum(vv)};
  for (int64_t k = full; k < a.classes; ++k) {
    const T zk = static_cast<T>(z[k]), vk = static_cast<T>(v[k]);
    s.dot += zk * vk;
    s.student_sq += zk * zk;
    s.teacher_sq += vk * vk;
  }
  if (a.ka == kKaProbShift && label != a.ignore_index) {
    const T teacher_max = row_max(v, a.classes);
    const int64_t argmax = first_index_of(v, a.classes, teacher_max);
    if (kd_row_target(a.ka, label, a.ignore_index, argmax) == kTargetSwapped) {
      s.dot += swapped_dot_correction(static_cast<T>(z[argmax]), static_cast<T>(z[label]),
                                      static_cast<T>(v[argmax]), static_cast<T>(v[label]));
    }
  }
  return flsw_weight(s, T(a.gamma));
}

template <typename scalar_t>
typename Lanes<scalar_t>::opmath cwsm_row(const DtdWeightArgs& a, const scalar_t* z) {
  using L = Lanes<scalar_t>;
  using T = typename L::opmath;
  using Vec = typename L::Vec;
  const T zmax = row_max(z, a.classes);
  const int64_t full = a.classes - a.classes % L::kWidth;
  const Vec vmax(zmax);
  Vec acc(0);
  Vec zp[L::kParts];
  for (int64_t k = 0; k < full; k += L::kWidth) {
    L::load(z + k, zp);
    for (int i = 0; i < L::kParts; ++i) acc += (zp[i] - vmax).exp();
  }
  T sum = reduce_sum(acc);
  for (int64_t k = full; k < a.classes; ++k) sum += std::exp(static_cast<T>(z[k]) - zmax);
  return cwsm_weight(sum);
}

void dtd_weight_kernel(const DtdWeightArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, args.dtype, "tskd_fast::dtd_weight", [&] {
        using T = typename Lanes<scalar_t>::opmath;
        const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(args.classes, 1));
        at::parallel_for(0, args.rows, grain, [&](int64_t begin, int64_t end) {
          for (int64_t row = begin; row < end; ++row) {
            const scalar_t* z =
                static_cast<const scalar_t*>(args.student) + row * args.student_row_stride;
            const scalar_t* v =
                static_cast<const scalar_t*>(args.teacher) + row * args.teacher_row_stride;
            const int64_t label = args.target ? args.target[row] : args.ignore_index;
            static_cast<T*>(args.weight)[row] =
                args.mode == 0 ? flsw_row(args, z, v, label) : cwsm_row(args, z);
          }
        });
      });
}

}  // namespace tskd_fast::cpu::CPU_CAPABILITY
