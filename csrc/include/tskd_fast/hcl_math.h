#pragma once

#include <cstdint>

#include "tskd_fast/macros.h"

// Level structure of ReviewKD's hierarchical context loss (docs/methods.md §2.4), shared by
// the CPU and CUDA kernels. For one stage pair with d = fs - ft (N, C, H, W):
//   L = (1 / tot) [ mean(d^2) + sum_{l in S} w_l mean(P_l(d)^2) ],
// S the levels l < H in order, w_l = 0.5, 0.25, ... over S, tot = 1 + sum w_l, P_l adaptive
// average pooling to l x l (pooling is linear, so P_l(fs) - P_l(ft) = P_l(d)). Per (n, c) plane
// the kernels accumulate
//   plane = sum(d^2) / (H W) + sum_l (w_l / l^2) sum_ij P_l(d)_ij^2,   L = sum(plane) / (tot N C),
// and the gradient is (2 / (tot N C)) [ d / (H W) + sum_l (w_l / l^2) sum_{ij containing (u, v)}
// P_l(d)_ij / |window_ij| ].
namespace tskd_fast {

constexpr int kHclMaxLevels = 8;

struct HclLevels {
  int count;                    // the included levels, in order
  int64_t size[kHclMaxLevels];  // l
  double coef[kHclMaxLevels];   // w_l / l^2
  double tot;                   // 1 + sum w_l
};

// The levels of `levels` (n of them, n <= kHclMaxLevels) that a map of height h includes.
TSKD_HD HclLevels hcl_levels(const int64_t* levels, int n, int64_t h) {
  HclLevels out{};
  out.tot = 1.0;
  double weight = 1.0;
  for (int k = 0; k < n; ++k) {
    if (levels[k] >= h) continue;
    weight *= 0.5;
    out.size[out.count] = levels[k];
    out.coef[out.count] = weight / static_cast<double>(levels[k] * levels[k]);
    out.tot += weight;
    ++out.count;
  }
  return out;
}

// Adaptive pooling window i of `out` over `in` elements: [floor(i in / out), ceil((i+1) in / out)).
TSKD_HD int64_t window_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
TSKD_HD int64_t window_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

// The windows that hold position u, [first_window, last_window): window i holds u when
// floor(i in / out) <= u < ceil((i+1) in / out), i.e. floor(u out / in) <= i < ceil((u+1) out /
// in). Windows overlap when out does not divide in, and several hold u when out > in.
TSKD_HD int64_t first_window(int64_t u, int64_t in, int64_t out) { return (u * out) / in; }
TSKD_HD int64_t last_window(int64_t u, int64_t in, int64_t out) {
  return ((u + 1) * out + in - 1) / in;
}

}  // namespace tskd_fast
