// The CUDA ABF-fusion and HCL kernels (csrc/cuda/abf_fuse_kernels.cuh, hcl_kernels.cuh) run by the
// host emulation of the CUDA execution model (cuda_emulation.h), against direct double-precision
// loops over the definitions, in NCHW and channels_last (NHWC) strides. Needs no GPU.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda_emulation.h"

// Fibers of one block run on one OS thread and switch only at barriers: an add is atomic.
inline float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}

#include "cuda/abf_fuse_kernels.cuh"
#include "cuda/hcl_kernels.cuh"
#include "test_check.h"

namespace tskd_fast::testing {
namespace {

std::vector<float> random_values(size_t count, std::mt19937& gen, float spread = 1.5f) {
  std::normal_distribution<float> dist(0.0f, spread);
  std::vector<float> v(count);
  for (float& x : v) x = dist(gen);
  return v;
}

// Offsets of (n, c, pixel) in NCHW or NHWC.
struct Layout {
  int64_t sn, sc, sp;
};
Layout layout(int64_t m, int64_t pixels, bool nhwc) {
  return nhwc ? Layout{m * pixels, 1, m} : Layout{m * pixels, pixels, 1};
}

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
    test_abf(nhwc);
    test_hcl(nhwc);
  }
  std::printf("test_reviewkd_cuda_emulated: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
