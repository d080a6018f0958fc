// The CUDA ABF-fusion kernels (csrc/cuda/abf_kernels.cuh) run by the host emulation of the CUDA
// execution model (cuda_emulation.h), against direct double-precision loops over the definitions,
// in NCHW and channels_last (NHWC) strides. Needs no GPU.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

// clang-format off
// The emulation must come before the kernel sources: it defines __global__, __shared__, ...
#include "cuda_emulation.h"
#include "cuda/abf_kernels.cuh"
// clang-format on
#include "feature_maps.h"
#include "test_check.h"

namespace tskd_fast::testing {
namespace {

void test_abf(bool nhwc) {
  const int64_t n = 2, m = 5, h = 7, w = 6, yh = 3, yw = 2, hw = h * w, yhw = yh * yw;
  std::mt19937 gen(7);
  const std::vector<float> x = random_values(n * m * hw, gen), y = random_values(n * m * yhw, gen);
  const std::vector<float> weight = random_values(4 * m, gen, 0.5f), bias = random_values(2, gen);
  const std::vector<float> grad = random_values(n * m * hw, gen, 1.0f);
  const Layout lx = layout(m, hw, nhwc), ly = layout(m, yhw, nhwc);
  cuda::AbfShape s{n, m, h, w, yh, yw, lx.sn, lx.sc, lx.sp, ly.sn, ly.sc, ly.sp};
  std::vector<float> out(x.size()), gates(2 * n * hw), dx(x.size()), dy_acc(y.size(), 0.0f);
  std::vector<float> gate_grads(2 * n * hw), dweight(4 * m), dbias(2);
  const int64_t blocks = (n * hw + cuda::kAbfThreads - 1) / cuda::kAbfThreads;
  cuda_emulation::launch(blocks, cuda::kAbfThreads, [&] {
    cuda::abf_forward_kernel<float>(x.data(), y.data(), weight.data(), bias.data(), out.data(),
                                    gates.data(), s);
  });
  cuda_emulation::launch(blocks, cuda::kAbfThreads, [&] {
    cuda::abf_backward_pixels_kernel<float>(grad.data(), x.data(), y.data(), weight.data(),
                                            gates.data(), dx.data(), dy_acc.data(),
                                            gate_grads.data(), s);
  });
  cuda_emulation::launch(4 * m + 2, cuda::kAbfThreads, [&] {
    cuda::abf_backward_weights_kernel<float>(x.data(), y.data(), gate_grads.data(), dweight.data(),
                                             dbias.data(), s);
  });
  // The definitions in double.
  std::vector<double> rdy(y.size(), 0.0), rdw(4 * m, 0.0), rdb(2, 0.0);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t p = 0; p < hw; ++p) {
      const int64_t src = nearest_source(p / w, yh, h) * yw + nearest_source(p % w, yw, w);
      auto xi = [&](int64_t c) { return b * lx.sn + c * lx.sc + p * lx.sp; };
      auto yi = [&](int64_t c) { return b * ly.sn + c * ly.sc + src * ly.sp; };
      double a0 = bias[0], a1 = bias[1], d0 = 0, d1 = 0;
      for (int64_t c = 0; c < m; ++c) {
        a0 += double(weight[c]) * x[xi(c)] + double(weight[m + c]) * y[yi(c)];
        a1 += double(weight[2 * m + c]) * x[xi(c)] + double(weight[3 * m + c]) * y[yi(c)];
        d0 += double(grad[xi(c)]) * x[xi(c)];
        d1 += double(grad[xi(c)]) * y[yi(c)];
      }
      const double z0 = 1 / (1 + std::exp(-a0)), z1 = 1 / (1 + std::exp(-a1));
      const double da0 = d0 * z0 * (1 - z0), da1 = d1 * z1 * (1 - z1);
      rdb[0] += da0;
      rdb[1] += da1;
      for (int64_t c = 0; c < m; ++c) {
        const double fused = x[xi(c)] * z0 + y[yi(c)] * z1;
        TSKD_CHECK(close(out[xi(c)], fused, 1e-5 * (1 + std::fabs(fused))), "fused %ld %ld %ld",
                   (long)b, (long)c, (long)p);
        const double gx = grad[xi(c)] * z0 + weight[c] * da0 + weight[2 * m + c] * da1;
        TSKD_CHECK(close(dx[xi(c)], gx, 1e-5 * (1 + std::fabs(gx))), "dx %ld %ld %ld", (long)b,
                   (long)c, (long)p);
        rdy[yi(c)] += grad[xi(c)] * z1 + weight[m + c] * da0 + weight[3 * m + c] * da1;
        rdw[c] += da0 * x[xi(c)];
        rdw[m + c] += da0 * y[yi(c)];
        rdw[2 * m + c] += da1 * x[xi(c)];
        rdw[3 * m + c] += da1 * y[yi(c)];
      }
    }
  }
  for (size_t i = 0; i < rdy.size(); ++i) {
    TSKD_CHECK(close(dy_acc[i], rdy[i], 1e-4 * (1 + std::fabs(rdy[i]))), "dy %zu", i);
  }
  for (int64_t j = 0; j < 4 * m; ++j) {
    TSKD_CHECK(close(dweight[j], rdw[j], 1e-4 * (1 + std::fabs(rdw[j]))), "dweight %ld", (long)j);
  }
  for (int k = 0; k < 2; ++k) TSKD_CHECK(close(dbias[k], rdb[k], 1e-4), "dbias %d", k);
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  using namespace tskd_fast::testing;
  for (const bool nhwc : {false, true}) {
    test_abf(nhwc);
  }
  std::printf("test_abf_emulated: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
