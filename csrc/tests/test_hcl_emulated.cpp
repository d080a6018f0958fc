// The CUDA HCL kernel (csrc/cuda/hcl_kernels.cuh) run by the host emulation of the CUDA execution
// model (cuda_emulation.h), against direct double-precision loops over the definitions, in NCHW
// and channels_last (NHWC) strides. Needs no GPU.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

// clang-format off
// The emulation must come before the kernel sources: it defines __global__, __shared__, ...
#include "cuda_emulation.h"
#include "cuda/hcl_kernels.cuh"
// clang-format on
#include "feature_maps.h"
#include "test_check.h"

namespace tskd_fast::testing {
namespace {

void test_hcl(bool nhwc) {
  const int64_t n = 2, c = 3, h = 7, w = 5, hw = h * w;
  std::mt19937 gen(11);
  const std::vector<float> fs = random_values(n * c * hw, gen), ft = random_values(n * c * hw, gen);
  const int64_t levels[] = {4, 2, 1};
  cuda::HclPlaneParams q{};
  q.c = c;
  q.h = h;
  q.w = w;
  const Layout l = layout(c, hw, nhwc);
  q.sfn = q.stn = q.sgn = l.sn;
  q.sfc = q.stc = q.sgc = l.sc;
  q.sfh = q.sth = q.sgh = l.sp * w;
  q.sfw = q.stw = q.sgw = l.sp;
  q.levels = hcl_levels(levels, 3, h);
  for (int k = 0; k < q.levels.count; ++k) {
    q.offset[k] = q.windows;
    q.windows += q.levels.size[k] * q.levels.size[k];
  }
  const double norm = q.levels.tot * n * c;
  q.grad_factor = static_cast<float>(2.0 / norm);
  std::vector<float> grad(fs.size()), planes(n * c);
  cuda_emulation::launch(n * c, cuda::kHclThreads, [&] {
    cuda::hcl_plane_kernel<float>(fs.data(), ft.data(), grad.data(), planes.data(), q);
  });
  double loss = 0;
  for (float p : planes) loss += p;
  loss /= norm;
  // The definitions in double: mean squares of d and of each pooled map; d loss / d fs.
  double expected = 0;
  std::vector<double> expected_grad(fs.size(), 0.0);
  const double full_norm = double(n) * c * hw;
  for (size_t i = 0; i < fs.size(); ++i) {
    const double d = double(fs[i]) - ft[i];
    expected += d * d / full_norm;
    expected_grad[i] = 2 * d / full_norm;
  }
  for (int k = 0; k < q.levels.count; ++k) {
    const int64_t lv = q.levels.size[k];
    const double weight = q.levels.coef[k] * lv * lv;
    for (int64_t b = 0; b < n; ++b) {
      for (int64_t ch = 0; ch < c; ++ch) {
        for (int64_t i = 0; i < lv; ++i) {
          for (int64_t j = 0; j < lv; ++j) {
            const int64_t r0 = window_start(i, h, lv), r1 = window_end(i, h, lv);
            const int64_t c0 = window_start(j, w, lv), c1 = window_end(j, w, lv);
            const double count = double((r1 - r0) * (c1 - c0));
            double sum = 0;
            for (int64_t u = r0; u < r1; ++u) {
              for (int64_t v = c0; v < c1; ++v) {
                const int64_t at = b * l.sn + ch * l.sc + (u * w + v) * l.sp;
                sum += double(fs[at]) - ft[at];
              }
            }
            const double mean = sum / count, pooled_norm = double(n) * c * lv * lv;
            expected += weight * mean * mean / pooled_norm;
            for (int64_t u = r0; u < r1; ++u) {
              for (int64_t v = c0; v < c1; ++v) {
                expected_grad[b * l.sn + ch * l.sc + (u * w + v) * l.sp] +=
                    weight * 2 * mean / pooled_norm / count;
              }
            }
          }
        }
      }
    }
  }
  expected /= q.levels.tot;
  TSKD_CHECK(close(loss, expected, 1e-5 * expected), "loss %g vs %g", loss, expected);
  for (size_t i = 0; i < grad.size(); ++i) {
    const double g = expected_grad[i] / q.levels.tot;
    TSKD_CHECK(close(grad[i], g, 1e-5 * (1e-3 + std::fabs(g))), "grad %zu: %g vs %g", i, grad[i],
               g);
  }
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  using namespace tskd_fast::testing;
  for (const bool nhwc : {false, true}) {
    test_hcl(nhwc);
  }
  std::printf("test_hcl_emulated: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
