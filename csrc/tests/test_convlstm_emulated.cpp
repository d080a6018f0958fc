// Host tests of the ConvLSTM gate math shared by the CPU and CUDA kernels
// (tskd_fast/convlstm_math.h) and of the CUDA kernels' source
// (csrc/cuda/convlstm_kernels.cuh) run by the host emulation of the CUDA execution model:
//   * the forward against the definitions in double, the backward against central finite
//     differences of the forward, with and without peepholes;
//   * the CUDA kernels, forward and backward (with and without peephole sums, dh or dc absent),
//     in NCHW and channels_last layouts, with 16-byte packs and element by element, in float32,
//     float16 and bfloat16, against a double loop over the definitions.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <type_traits>
#include <vector>

// clang-format off
// The emulation must come before the kernel sources: it defines __global__, __device__, ...
#include "cuda_emulation.h"
#include "cuda/convlstm_kernels.cuh"
// clang-format on
#include "test_check.h"
#include "tskd_fast/convlstm_math.h"

namespace tskd_fast::testing {
namespace {

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// The cell from its definition (docs/methods.md §3.4), in double.
struct Cell {
  double h, c;
};
Cell cell_definition(const double (&a)[4], double c_prev, const double (&w)[3]) {
  const double i = sigmoid(a[0] + w[0] * c_prev), f = sigmoid(a[1] + w[1] * c_prev);
  const double c = f * c_prev + i * std::tanh(a[2]);
  return {sigmoid(a[3] + w[2] * c) * std::tanh(c), c};
}

void check_math_against_definitions(std::mt19937& rng) {
  std::normal_distribution<double> normal(0.0, 3.0);
  using Ops = ScalarGateOps<double>;
  for (int trial = 0; trial < 500; ++trial) {
    double a[4], w[3];
    for (double& x : a) x = normal(rng);
    for (double& x : w) x = 0.3 * normal(rng);
    const double c_prev = 0.5 * normal(rng), dh = normal(rng), dc = normal(rng);
    const Cell want = cell_definition(a, c_prev, w);
    const GateState<double> got =
        convlstm_cell<Ops, true>(a[0], a[1], a[2], a[3], c_prev, w[0], w[1], w[2]);
    TSKD_CHECK_CLOSE(got.h, want.h, 1e-14, "h, trial %d", trial);
    TSKD_CHECK_CLOSE(got.c, want.c, 1e-14, "c, trial %d", trial);
    // The same cell in float: within a few float ulps of the double one.
    const GateState<float> got32 = convlstm_cell<ScalarGateOps<float>, true>(
        float(a[0]), float(a[1]), float(a[2]), float(a[3]), float(c_prev), float(w[0]), float(w[1]),
        float(w[2]));
    TSKD_CHECK_CLOSE(got32.h, want.h, 2e-6 * (1 + std::fabs(want.c)), "float h, trial %d", trial);
    TSKD_CHECK_CLOSE(got32.c, want.c, 2e-6 * (1 + std::fabs(want.c)), "float c, trial %d", trial);

    // Backward against central differences of L = dh h + dc c.
    const GateGrads<double> g =
        convlstm_cell_backward<Ops, true>(a[0], a[1], a[2], a[3], c_prev, w[0], w[1], w[2], dh, dc);
    auto loss = [&](const double (&aa)[4], double cp, const double (&ww)[3]) {
      const Cell s = cell_definition(aa, cp, ww);
      return dh * s.h + dc * s.c;
    };
    const double eps = 1e-6;
    const double grads[4] = {g.a_i, g.a_f, g.a_g, g.a_o};
    for (int k = 0; k < 4; ++k) {
      double up[4], down[4];
      for (int j = 0; j < 4; ++j) up[j] = down[j] = a[j];
      up[k] += eps;
      down[k] -= eps;
      const double numeric = (loss(up, c_prev, w) - loss(down, c_prev, w)) / (2 * eps);
      TSKD_CHECK_CLOSE(grads[k], numeric, 1e-7, "d gate %d, trial %d", k, trial);
    }
    const double numeric_c = (loss(a, c_prev + eps, w) - loss(a, c_prev - eps, w)) / (2 * eps);
    TSKD_CHECK_CLOSE(g.c_prev, numeric_c, 1e-7, "d c_prev, trial %d", trial);
    // The peephole terms of one sample: d w_ci = da_i c_prev, d w_cf = da_f c_prev, d w_co = da_o
    // c.
    const double terms[3] = {g.a_i * c_prev, g.a_f * c_prev, g.a_o * g.c};
    for (int k = 0; k < 3; ++k) {
      double up[3], down[3];
      for (int j = 0; j < 3; ++j) up[j] = down[j] = w[j];
      up[k] += eps;
      down[k] -= eps;
      const double numeric = (loss(a, c_prev, up) - loss(a, c_prev, down)) / (2 * eps);
      TSKD_CHECK_CLOSE(terms[k], numeric, 1e-7, "d peephole %d, trial %d", k, trial);
    }
    // Without peepholes the w arguments are not read.
    const GateGrads<double> plain = convlstm_cell_backward<Ops, false>(
        a[0], a[1], a[2], a[3], c_prev, double(NAN), double(NAN), double(NAN), dh, dc);
    const double zero[3] = {0, 0, 0};
    const double numeric_plain =
        (loss(a, c_prev + eps, zero) - loss(a, c_prev - eps, zero)) / (2 * eps);
    TSKD_CHECK_CLOSE(plain.c_prev, numeric_plain, 1e-7, "d c_prev without peepholes, %d", trial);
  }
  // Saturation and special values.
  using F = ScalarGateOps<float>;
  TSKD_CHECK(gate_sigmoid<F>(100.0f) == 1.0f && gate_sigmoid<F>(-100.0f) >= 0.0f, "sigmoid tails");
  TSKD_CHECK(gate_tanh<F>(50.0f) == 1.0f && gate_tanh<F>(-50.0f) == -1.0f, "tanh tails");
  TSKD_CHECK(gate_sigmoid<F>(INFINITY) == 1.0f && gate_sigmoid<F>(-INFINITY) == 0.0f,
             "sigmoid inf");
  TSKD_CHECK(std::isnan(gate_sigmoid<F>(NAN)) && std::isnan(gate_tanh<F>(NAN)), "NaN stays NaN");
}

// ---- the CUDA kernels under emulation ---------------------------------------------------------

template <typename scalar_t>
const char* dtype_name() {
  if constexpr (std::is_same_v<scalar_t, float>) return "float32";
  if constexpr (std::is_same_v<scalar_t, c10::Half>) return "float16";
  return "bfloat16";
}

template <typename scalar_t>
double rounding() {
  if constexpr (std::is_same_v<scalar_t, float>) return 0.0;
  if constexpr (std::is_same_v<scalar_t, c10::Half>) return 1.0 / 1024;
  return 1.0 / 128;
}

// A buffer of n elements starting `offset` elements past a 16-byte boundary.
template <typename scalar_t>
struct Buffer {
  std::vector<scalar_t> storage;
  scalar_t* data;
  Buffer(int64_t n, int64_t offset) : storage(n + offset + 16, scalar_t(0.0f)) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(storage.data());
    data = storage.data() + (16 - base % 16) % 16 / sizeof(scalar_t) + offset;
  }
  double at(int64_t i) const { return static_cast<double>(static_cast<float>(data[i])); }
};

template <typename scalar_t>
void fill(Buffer<scalar_t>& b, int64_t n, double spread, std::mt19937& rng) {
  std::normal_distribution<double> normal(0.0, spread);
  for (int64_t i = 0; i < n; ++i)
    b.data[i] = static_cast<scalar_t>(static_cast<float>(normal(rng)));
}

struct Case {
  int64_t batch, hidden, height, width;
  bool channels_last, peepholes, with_dh, with_dc, sums;
  int64_t offset;  // elements past 16-byte alignment (1 forces element-wise access)
};

template <typename scalar_t>
void check_kernels(const Case& k, std::mt19937& rng) {
  const int64_t B = k.batch, C = k.hidden, P = k.height * k.width, state = B * C * P;
  ConvLstmLayout l{};
  l.batch = B;
  l.gate_batch_stride = 4 * C * P;
  l.rows = k.channels_last ? P : 1;
  l.cols = k.channels_last ? C : C * P;
  l.gate_row_stride = k.channels_last ? 4 * C : 0;
  l.gate_block = k.channels_last ? C : C * P;
  Buffer<scalar_t> gates(4 * state, k.offset), c_prev(state, k.offset), dh(state, k.offset),
      dc(state, k.offset), h(state, k.offset), c(state, k.offset), dgates(4 * state, k.offset),
      dc_prev(state, k.offset);
  Buffer<scalar_t> w[3] = {Buffer<scalar_t>(C * P, k.offset), Buffer<scalar_t>(C * P, k.offset),
                           Buffer<scalar_t>(C * P, k.offset)};
  std::vector<float> sums[3] = {std::vector<float>(C * P), std::vector<float>(C * P),
                                std::vector<float>(C * P)};
  fill(gates, 4 * state, 2.5, rng);
  fill(c_prev, state, 1.5, rng);
  fill(dh, state, 1.0, rng);
  fill(dc, state, 1.0, rng);
  for (auto& wi : w) fill(wi, C * P, 0.7, rng);

  cuda::ConvLstmParams<scalar_t> p{};
  p.l = l;
  p.gates = gates.data;
  p.c_prev = c_prev.data;
  if (k.peepholes) {
    p.w_ci = w[0].data;
    p.w_cf = w[1].data;
    p.w_co = w[2].data;
  }
  p.h = h.data;
  p.c = c.data;
  p.grad_h = k.with_dh ? dh.data : nullptr;
  p.grad_c = k.with_dc ? dc.data : nullptr;
  p.grad_gates = dgates.data;
  p.grad_c_prev = dc_prev.data;
  if (k.sums) {
    p.sum_ci = sums[0].data();
    p.sum_cf = sums[1].data();
    p.sum_co = sums[2].data();
  }
  // Three blocks at most, so the kernels' grid-stride loops go round.
  auto launch = [&](auto kernel, int64_t items) {
    if (items == 0) return;
    cuda_emulation::launch(cuda::convlstm_blocks(items, 3), cuda::kConvLstmThreads,
                           [&] { kernel(p); });
  };
  cuda::launch_convlstm_forward(p, launch);
  cuda::launch_convlstm_backward(p, launch);

  const double r = rounding<scalar_t>();
  std::vector<double> want_sums[3] = {std::vector<double>(C * P, 0.0),
                                      std::vector<double>(C * P, 0.0),
                                      std::vector<double>(C * P, 0.0)};
  int64_t bad = 0;  // failures beyond the first few are counted, not printed
  auto expect = [&](double got, double want, double tol, const char* what, int64_t at) {
    tol += r * std::fabs(want);
    if (close(got, want, tol)) return;
    if (++bad > 5) {
      ++failures();
      return;
    }
    TSKD_CHECK_CLOSE(
        got, want, tol, "%s[%lld], %s, B=%lld C=%lld %lldx%lld cl=%d peep=%d dh=%d dc=%d off=%lld",
        what, static_cast<long long>(at), dtype_name<scalar_t>(), static_cast<long long>(B),
        static_cast<long long>(C), static_cast<long long>(k.height),
        static_cast<long long>(k.width), k.channels_last, k.peepholes, k.with_dh, k.with_dc,
        static_cast<long long>(k.offset));
  };
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t q = 0; q < l.rows; ++q) {
      for (int64_t col = 0; col < l.cols; ++col) {
        const int64_t gate = b * l.gate_batch_stride + q * l.gate_row_stride + col;
        const int64_t s = (b * l.rows + q) * l.cols + col, pos = q * l.cols + col;
        double a[4], wv[3] = {0, 0, 0};
        for (int g = 0; g < 4; ++g) a[g] = gates.at(gate + g * l.gate_block);
        if (k.peepholes) {
          for (int j = 0; j < 3; ++j) wv[j] = w[j].at(pos);
        }
        const double cp = c_prev.at(s);
        const Cell want = cell_definition(a, cp, wv);
        expect(h.at(s), want.h, 1e-5, "h", s);
        expect(c.at(s), want.c, 1e-5 * (1 + std::fabs(want.c)), "c", s);
        const GateGrads<double> g = convlstm_cell_backward<ScalarGateOps<double>, true>(
            a[0], a[1], a[2], a[3], cp, wv[0], wv[1], wv[2], k.with_dh ? dh.at(s) : 0.0,
            k.with_dc ? dc.at(s) : 0.0);
        const double dgate[4] = {g.a_i, g.a_f, g.a_g, g.a_o};
        for (int j = 0; j < 4; ++j)
          expect(dgates.at(gate + j * l.gate_block), dgate[j], 2e-5, "dg", s);
        expect(dc_prev.at(s), g.c_prev, 2e-5, "dc_prev", s);
        want_sums[0][pos] += g.a_i * cp;
        want_sums[1][pos] += g.a_f * cp;
        want_sums[2][pos] += g.a_o * g.c;
      }
    }
  }
  if (k.sums) {
    for (int j = 0; j < 3; ++j) {
      for (int64_t pos = 0; pos < C * P; ++pos) {
        TSKD_CHECK_CLOSE(sums[j][pos], want_sums[j][pos], 2e-5 * B, "peephole sum %d[%lld], %s", j,
                         static_cast<long long>(pos), dtype_name<scalar_t>());
      }
    }
  }
}

template <typename scalar_t>
void check_kernel_cases(std::mt19937& rng) {
  const Case cases[] = {
      // NCHW and channels_last, packed (offset 0, sizes multiples of 8) and element-wise.
      {3, 8, 4, 4, false, false, true, true, false, 0},
      {3, 8, 4, 4, true, true, true, true, true, 0},
      {2, 5, 3, 7, false, true, true, false, true, 0},
      {2, 5, 3, 7, true, true, false, true, true, 0},
      {3, 8, 2, 4, false, true, true, true, true, 1},
      {2, 16, 3, 3, true, false, true, true, false, 1},
      {4, 8, 4, 2, true, true, true, true, false, 0},
  };
  for (const Case& k : cases) check_kernels<scalar_t>(k, rng);
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  using namespace tskd_fast::testing;
  std::mt19937 rng(7);
  std::printf("convlstm math:\n");
  check_math_against_definitions(rng);
  std::printf("convlstm CUDA kernels, emulated:\n");
  check_kernel_cases<float>(rng);
  check_kernel_cases<c10::Half>(rng);
  check_kernel_cases<c10::BFloat16>(rng);
  std::printf("test_convlstm_emulated: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
