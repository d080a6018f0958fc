// Host-side tests of the DTD-weight row math shared by the CPU and CUDA kernels
// (tskd_fast/dtd_math.h) against a direct double-precision computation from the definition
// (dtd_reference.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <utility>

#include "dtd_reference.h"
#include "test_check.h"
#include "tskd_fast/dtd_math.h"
#include "tskd_fast/kd_loss_math.h"

namespace tskd_fast::testing {
namespace {

void test_dtd_weights(std::mt19937& rng) {
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t classes = 1 + trial * 7;
    const Row z = random_row(rng, classes, 3.0), v = random_row(rng, classes, 3.0);
    const int64_t j = first_argmax(v);
    const int64_t label = trial % 3 == 0 ? j : (j + 1 + trial) % classes;
    const double gamma = 0.5 * (trial % 5);
    for (int64_t ka : {0, 1, 2}) {
      CosineSums<double> s{0.0, 0.0, 0.0};
      for (int64_t k = 0; k < classes; ++k) {
        s.dot += z[k] * v[k];
        s.student_sq += z[k] * z[k];
        s.teacher_sq += v[k] * v[k];
      }
      if (ka == 1 && kd_row_target(ka, label, -100, j) == kTargetSwapped) {
        s.dot += swapped_dot_correction(z[j], z[label], v[j], v[label]);
      }
      const double expected = dtd_weight_reference(z, v, label, 0, gamma, ka, -100);
      TSKD_CHECK_CLOSE(flsw_weight(s, gamma), expected, 1e-12, "flsw trial %d ka %lld", trial,
                       (long long)ka);
      const CosineSums<float> f{float(s.dot), float(s.student_sq), float(s.teacher_sq)};
      TSKD_CHECK_CLOSE(flsw_weight(f, float(gamma)), expected, 2e-5 * std::max(1.0, expected),
                       "float flsw trial %d", trial);
    }
    const double zmax = *std::max_element(z.begin(), z.end());
    double sum = 0.0;
    for (double x : z) sum += std::exp(x - zmax);
    TSKD_CHECK_CLOSE(cwsm_weight(sum), dtd_weight_reference(z, v, label, 1, gamma, 0, -100), 1e-9,
                     "cwsm trial %d", trial);
  }
  // The eps-padded norms keep identical rows slightly below cosine 1; a cosine pushed above 1
  // (by rounding on nearly parallel rows) gives weight 0, not NaN from pow of a negative base.
  const CosineSums<float> same{4.0f, 4.0f, 4.0f};
  const double gap = 1.0 - 4.0 / ((2.0 + 1e-4) * (2.0 + 1e-4));
  TSKD_CHECK_CLOSE(flsw_weight(same, 0.5f), std::sqrt(gap), 5e-6, "identical rows (float)");
  const CosineSums<double> same_d{4.0, 4.0, 4.0};
  TSKD_CHECK_CLOSE(flsw_weight(same_d, 0.5), std::sqrt(gap), 1e-12, "identical rows");
  const CosineSums<double> over{1.01, 1.0, 1.0};
  TSKD_CHECK(flsw_weight(over, 0.5) == 0.0, "cosine > 1 gives %g", flsw_weight(over, 0.5));
}

// z . swapped(v) == z . v + correction, exactly where the products are exact.
void test_swapped_dot_correction() {
  const Row z = {1.0, -2.0, 3.0, 0.5}, v = {4.0, 1.0, -1.0, 2.0};
  const int64_t j = 0, label = 2;
  Row t = v;
  std::swap(t[j], t[label]);
  double dot = 0.0, dot_swapped = 0.0;
  for (size_t k = 0; k < z.size(); ++k) {
    dot += z[k] * v[k];
    dot_swapped += z[k] * t[k];
  }
  TSKD_CHECK(dot + swapped_dot_correction(z[j], z[label], v[j], v[label]) == dot_swapped,
             "swapped dot");
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  using namespace tskd_fast::testing;
  std::mt19937 rng(1234);
  test_dtd_weights(rng);
  test_swapped_dot_correction();
  std::printf("test_dtd_math: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
