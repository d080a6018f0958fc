// Host-side tests of the HCL math shared by the CPU and CUDA kernels (tskd_fast/hcl_math.h): the
// adaptive pooling windows and the windows holding each position, and the level weights.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "test_check.h"
#include "tskd_fast/hcl_math.h"

namespace tskd_fast::testing {
namespace {

void test_windows() {
  // first_window/last_window list exactly the windows [start, end) that hold each position.
  for (int64_t in = 1; in <= 20; ++in) {
    for (int64_t out = 1; out <= 9; ++out) {
      for (int64_t u = 0; u < in; ++u) {
        int64_t lo = out, hi = 0;
        for (int64_t i = 0; i < out; ++i) {
          if (window_start(i, in, out) <= u && u < window_end(i, in, out)) {
            lo = lo < i ? lo : i;
            hi = hi > i + 1 ? hi : i + 1;
          }
        }
        TSKD_CHECK(first_window(u, in, out) == lo && last_window(u, in, out) == hi,
                   "in %ld out %ld u %ld: [%ld, %ld) vs [%ld, %ld)", (long)in, (long)out, (long)u,
                   (long)first_window(u, in, out), (long)last_window(u, in, out), (long)lo,
                   (long)hi);
      }
    }
  }
  // 7 with l = 4: [0, 2), [1, 4), [3, 6), [5, 7).
  const int64_t starts[] = {0, 1, 3, 5}, ends[] = {2, 4, 6, 7};
  for (int64_t i = 0; i < 4; ++i) {
    TSKD_CHECK(window_start(i, 7, 4) == starts[i] && window_end(i, 7, 4) == ends[i], "7/4 #%ld",
               (long)i);
  }
}

void test_levels() {
  const int64_t levels[] = {4, 2, 1};
  const HclLevels big = hcl_levels(levels, 3, 8);
  TSKD_CHECK(big.count == 3 && close(big.tot, 1.875, 1e-15), "H = 8");
  TSKD_CHECK(close(big.coef[0], 0.5 / 16, 1e-15) && close(big.coef[2], 0.125, 1e-15), "weights");
  const HclLevels four = hcl_levels(levels, 3, 4);
  TSKD_CHECK(four.count == 2 && four.size[0] == 2 && close(four.tot, 1.75, 1e-15), "H = 4");
  TSKD_CHECK(hcl_levels(levels, 3, 2).count == 1 && hcl_levels(levels, 3, 1).count == 0, "small");
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  using namespace tskd_fast::testing;
  test_windows();
  test_levels();
  std::printf("test_hcl_math: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
