// Host-side tests of the ABF-fusion math shared by the CPU and CUDA kernels (tskd_fast/abf_math.h):
// the nearest-upsampling source index and the per-pixel gradient against finite differences of the
// fused value.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "test_check.h"
#include "tskd_fast/abf_math.h"

namespace tskd_fast::testing {
namespace {

void test_nearest_source() {
  // Upsampling: every source is read, sources never decrease, and small ratios agree with the
  // exact integer rule floor(dst * in / out).
  for (int64_t in = 1; in <= 16; ++in) {
    for (int64_t out = in; out <= 64; ++out) {
      int64_t previous = 0;
      std::vector<int> hits(in, 0);
      for (int64_t dst = 0; dst < out; ++dst) {
        const int64_t src = nearest_source(dst, in, out);
        TSKD_CHECK(src >= previous && src < in, "in %ld out %ld dst %ld -> %ld", (long)in,
                   (long)out, (long)dst, (long)src);
        previous = src;
        ++hits[src];
        // Off the exact multiples, the float scale gives floor(dst * in / out); on them it may
        // land one below (14 -> 46 reads source 6 at dst 23, not 7), as F.interpolate does.
        const int64_t exact = (dst * in) / out;
        const bool on_multiple = (dst * in) % out == 0;
        TSKD_CHECK(src == exact || (on_multiple && src == exact - 1),
                   "in %ld out %ld dst %ld: %ld vs %ld", (long)in, (long)out, (long)dst, (long)src,
                   (long)exact);
      }
      for (int64_t s = 0; s < in; ++s) TSKD_CHECK(hits[s] > 0, "source %ld unread", (long)s);
    }
  }
  TSKD_CHECK(nearest_source(6, 1, 7) == 0, "1 -> 7 broadcasts");
  TSKD_CHECK(nearest_source(6, 3, 7) == 2, "3 -> 7");
  TSKD_CHECK(nearest_source(23, 14, 46) == 6, "14 -> 46 at 23: float scale, as ATen");
}

// One pixel with M channels: fused_c = x_c z0 + y_c z1, loss = sum_c g_c fused_c.
double pixel_loss(const std::vector<double>& w, const double* b, const std::vector<double>& x,
                  const std::vector<double>& y, const std::vector<double>& g) {
  const int64_t m = static_cast<int64_t>(x.size());
  double a0 = b[0], a1 = b[1];
  for (int64_t c = 0; c < m; ++c) {
    const AbfChannelWeights<double> wc = abf_channel_weights(w.data(), m, c);
    a0 += wc.x0 * x[c] + wc.y0 * y[c];
    a1 += wc.x1 * x[c] + wc.y1 * y[c];
  }
  const double z0 = sigmoid(a0), z1 = sigmoid(a1);
  double loss = 0;
  for (int64_t c = 0; c < m; ++c) loss += g[c] * (x[c] * z0 + y[c] * z1);
  return loss;
}

void test_abf_pixel_gradient() {
  const int64_t m = 5;
  std::vector<double> w(4 * m), x(m), y(m), g(m);
  for (int64_t k = 0; k < 4 * m; ++k) w[k] = std::sin(1.3 * k + 0.2);
  for (int64_t c = 0; c < m; ++c) {
    x[c] = std::cos(0.7 * c) * 1.5;
    y[c] = std::sin(0.9 * c + 1) * 2;
    g[c] = std::cos(1.9 * c + 0.3);
  }
  const double b[2] = {0.3, -0.4};
  double a0 = b[0], a1 = b[1];
  for (int64_t c = 0; c < m; ++c) {
    const AbfChannelWeights<double> wc = abf_channel_weights(w.data(), m, c);
    a0 += wc.x0 * x[c] + wc.y0 * y[c];
    a1 += wc.x1 * x[c] + wc.y1 * y[c];
  }
  const double z0 = sigmoid(a0), z1 = sigmoid(a1);
  double dz0 = 0, dz1 = 0;
  for (int64_t c = 0; c < m; ++c) {
    dz0 += g[c] * x[c];
    dz1 += g[c] * y[c];
  }
  const double da0 = gate_logit_grad(dz0, z0), da1 = gate_logit_grad(dz1, z1);
  const double eps = 1e-6;
  for (int64_t c = 0; c < m; ++c) {
    const AbfChannelWeights<double> wc = abf_channel_weights(w.data(), m, c);
    std::vector<double> xp = x, xm = x, yp = y, ym = y;
    xp[c] += eps;
    xm[c] -= eps;
    yp[c] += eps;
    ym[c] -= eps;
    const double fd_x = (pixel_loss(w, b, xp, y, g) - pixel_loss(w, b, xm, y, g)) / (2 * eps);
    const double fd_y = (pixel_loss(w, b, x, yp, g) - pixel_loss(w, b, x, ym, g)) / (2 * eps);
    TSKD_CHECK(close(abf_grad_x(wc, g[c], z0, da0, da1), fd_x, 1e-7), "dx[%ld]", (long)c);
    TSKD_CHECK(close(abf_grad_y(wc, g[c], z1, da0, da1), fd_y, 1e-7), "dy[%ld]", (long)c);
  }
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  using namespace tskd_fast::testing;
  test_nearest_source();
  test_abf_pixel_gradient();
  std::printf("test_abf_math: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
