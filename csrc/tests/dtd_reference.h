#pragma once

// A direct double-precision implementation of one row's DTD weight, written from the definition
// rather than from the kernels' sums: the oracle of the DTD C++ tests.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kd_loss_reference.h"

namespace tskd_fast::testing {

// mode 0: flsw, (1 - cos(z, v))^gamma with the probability-shifted v; mode 1: cwsm.
inline double dtd_weight_reference(const Row& z, const Row& v, int64_t label, int64_t mode,
                                   double gamma, int64_t ka, int64_t ignore_index) {
  if (mode == 1) {
    double zmax = -kInf;
    bool nan = false;
    for (double x : z) {
      nan = nan || std::isnan(x);
      zmax = std::max(zmax, x);
    }
    double sum = 0.0;
    for (double x : z) sum += std::exp(x - zmax);
    if (nan) sum = kNaN;
    return 1.0 / (1.0 / sum + 1e-3);
  }
  const Row t = adjusted_teacher(v, label, ka == 1 ? 1 : 0, ignore_index).first;
  double dot = 0.0, zz = 0.0, tt = 0.0;
  for (size_t k = 0; k < z.size(); ++k) {
    dot += z[k] * t[k];
    zz += z[k] * z[k];
    tt += t[k] * t[k];
  }
  const double cosine = dot / ((std::sqrt(zz) + 1e-4) * (std::sqrt(tt) + 1e-4));
  return std::pow(std::clamp(1.0 - cosine, 0.0, 2.0), gamma);
}

}  // namespace tskd_fast::testing
