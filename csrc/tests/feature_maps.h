#pragma once

// Feature maps for the emulated CUDA map kernels (abf, hcl): random values and the NCHW / NHWC
// offsets of (n, c, pixel).
#include <cstdint>
#include <random>
#include <vector>

namespace tskd_fast::testing {

inline std::vector<float> random_values(size_t count, std::mt19937& gen, float spread = 1.5f) {
  std::normal_distribution<float> dist(0.0f, spread);
  std::vector<float> v(count);
  for (float& x : v) x = dist(gen);
  return v;
}

// Offsets of (n, c, pixel) in NCHW or NHWC.
struct Layout {
  int64_t sn, sc, sp;
};
inline Layout layout(int64_t m, int64_t pixels, bool nhwc) {
  return nhwc ? Layout{m * pixels, 1, m} : Layout{m * pixels, pixels, 1};
}

}  // namespace tskd_fast::testing
