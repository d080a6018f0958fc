// The CUDA row kernel of the fused linear + KD loss (csrc/cuda/fused_linear_kd_kernels.cuh), run
// on the host under cuda_emulation.h, against the double-precision reference
// (fused_linear_kd_reference.h): every divergence, knowledge adjustment, CE, temperature 1 and
// others, a top-k teacher (label listed or not, K = V), ignored rows, rows without labels, no
// gradient; every block size (128, 256, 512 threads), packed and unpacked rows,
// float32/float16/bfloat16; NaN, +inf and -inf logits and teacher maxima tied across threads. It
// checks the kernel's logic (indexing, reductions, in-place writes, the per-row math); GPU-only
// matters (occupancy, the device's exp2f, races the emulation's sequential fibers cannot show)
// need a GPU run of tests/test_fused_linear_kd_rows.py.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

// clang-format off
// The emulation must come before the kernel sources: it defines __global__, __shared__, ...
#include "cuda_emulation.h"
#include "cuda/fused_linear_kd_kernels.cuh"
// clang-format on
#include "fused_linear_kd_reference.h"
#include "row_operands.h"
#include "test_check.h"

namespace tskd_fast::testing {
namespace {

using cuda::FlkdParams;

const char* const kDivergenceNames[] = {"fkl", "rkl", "jsd", "skew_fkl", "skew_rkl", "tvd"};

struct FlkdCase {
  int64_t rows;
  int64_t classes;
  int64_t row_pad = 0;  // extra elements per row (a row stride that breaks packing when odd)
  FlkdOptionsRef options;
  int64_t topk = 0;  // 0: teacher logits; else K listed ids per row
  bool has_target = true;
  bool compute_grad = true;
  double spread = 3.0;
  int threads = 0;  // 0: the launcher's choice; else force this block size
  // Edits the double rows (student, teacher) and labels before they are stored.
  std::function<void(std::vector<Row>&, std::vector<Row>&, std::vector<int64_t>&)> edit;
};

template <typename scalar_t, typename Launch>
void launch_with(const FlkdParams<scalar_t>& p, int threads, Launch&& launch) {
  switch (threads) {
    case 128:
      return launch(cuda::fused_linear_kd_rows_kernel<scalar_t, 128>, p.rows, 128);
    case 256:
      return launch(cuda::fused_linear_kd_rows_kernel<scalar_t, 256>, p.rows, 256);
    case 512:
      return launch(cuda::fused_linear_kd_rows_kernel<scalar_t, 512>, p.rows, 512);
    default:
      cuda::launch_fused_linear_kd_rows(p, launch);
  }
}

// The listed ids of a top-k row: the teacher's k largest (in descending order, as a serving
// engine returns them) and their log-probabilities at temperature 1.
void top_k(const Row& t, int64_t k, std::vector<int64_t>& ids, Row& logprobs) {
  std::vector<int64_t> order(t.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return t[a] > t[b]; });
  const Row log_p = log_softmax_ref(t, 1.0);
  ids.assign(order.begin(), order.begin() + k);
  logprobs.resize(k);
  for (int64_t i = 0; i < k; ++i) logprobs[i] = static_cast<double>(float(log_p[ids[i]]));
}

// max - min of the finite values of a row (0 when there are none).
double finite_range(const Row& x) {
  double lo = kInf, hi = -kInf;
  for (double v : x) {
    if (std::isfinite(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  return hi >= lo ? hi - lo : 0.0;
}

template <typename scalar_t>
void check_case(const FlkdCase& c, std::mt19937& rng) {
  std::normal_distribution<double> normal(0.0, c.spread);
  std::uniform_real_distribution<double> uniform(0.5, 4.0);
  const FlkdOptionsRef& o = c.options;
  std::vector<Row> s(c.rows, Row(c.classes)), t(c.rows, Row(c.classes));
  std::vector<int64_t> labels(c.rows);
  std::vector<float> tau(c.rows);
  for (int64_t n = 0; n < c.rows; ++n) {
    for (int64_t k = 0; k < c.classes; ++k) {
      s[n][k] = normal(rng);
      t[n][k] = normal(rng);
    }
    labels[n] = static_cast<int64_t>(rng() % c.classes);
    if (n % 5 == 4) labels[n] = o.ignore_index;
    if (n % 3 == 1) labels[n] = first_argmax(t[n]);  // KA leaves these rows alone
    tau[n] = n % 4 == 2 ? 1.0f : static_cast<float>(uniform(rng));
  }
  if (c.edit) c.edit(s, t, labels);
  Operand<scalar_t> student(s, c.classes + c.row_pad, 0);
  const Operand<scalar_t> teacher(t, c.classes + c.row_pad, 0);
  std::vector<int64_t> ids(c.rows * c.topk);
  std::vector<float> logprobs(c.rows * c.topk), scratch(c.rows * c.topk);
  std::vector<std::vector<int64_t>> row_ids(c.rows);
  std::vector<Row> row_logprobs(c.rows);
  if (c.topk > 0) {
    for (int64_t n = 0; n < c.rows; ++n) {
      top_k(teacher.values[n], c.topk, row_ids[n], row_logprobs[n]);
      // A label among the listed ids on some rows (the top-k path's label column).
      if (n % 4 == 3 && labels[n] != o.ignore_index) labels[n] = row_ids[n][c.topk / 2];
      for (int64_t i = 0; i < c.topk; ++i) {
        ids[n * c.topk + i] = row_ids[n][i];
        logprobs[n * c.topk + i] = static_cast<float>(row_logprobs[n][i]);
      }
    }
  }
  std::vector<float> row_loss(c.rows, -1.0f);
  const double grad_scale = c.compute_grad ? 0.5 : 1.0;

  FlkdParams<scalar_t> p{};
  p.student = student.data;
  p.student_stride = student.stride;
  p.teacher = c.topk > 0 ? nullptr : teacher.data;
  p.teacher_stride = teacher.stride;
  p.topk_ids = c.topk > 0 ? ids.data() : nullptr;
  p.topk_logprobs = logprobs.data();
  p.topk_student = scratch.data();
  p.topk = c.topk;
  p.target = c.has_target ? labels.data() : nullptr;
  p.temperature = tau.data();
  p.row_loss = row_loss.data();
  p.rows = c.rows;
  p.classes = c.classes;
  p.options = flkd_options<float>(
      o.divergence, static_cast<float>(o.beta), o.ka, static_cast<float>(o.lsr_p), o.scale_tau2,
      static_cast<float>(o.ce_weight), o.ignore_index, static_cast<float>(grad_scale), c.classes);
  p.compute_grad = c.compute_grad;
  p.aligned = cuda::rows_take_packs<scalar_t>(p.student, p.student_stride, p.classes) &&
              (p.teacher == nullptr ||
               cuda::rows_take_packs<scalar_t>(p.teacher, p.teacher_stride, p.classes));
  run_emulated(p,
               [&](const auto& params, auto&& launch) { launch_with(params, c.threads, launch); });

  const std::string what = std::string(dtype_name<scalar_t>()) + " R=" + std::to_string(c.rows) +
                           " V=" + std::to_string(c.classes) +
                           (p.aligned ? " packed" : " unpacked") + " " +
                           kDivergenceNames[o.divergence] + " ka=" + std::to_string(o.ka) +
                           " ce=" + std::to_string(o.ce_weight).substr(0, 4) +
                           (c.topk ? " topk=" + std::to_string(c.topk) : "") +
                           (c.has_target ? "" : " no-target") + (c.compute_grad ? "" : " no-grad") +
                           (c.threads ? " threads=" + std::to_string(c.threads) : "");
  const double rounding = output_rounding<scalar_t>();
  int bad_rows = 0;
  for (int64_t n = 0; n < c.rows; ++n) {
    const int64_t label = c.has_target ? labels[n] : -1;  // -1: no label (the reference's)
    const FlkdRowRef ref =
        c.topk > 0 ? flkd_topk_row_reference(student.values[n], row_ids[n], row_logprobs[n], label,
                                             tau[n], o)
                   : flkd_row_reference(student.values[n], teacher.values[n], label, tau[n], o);
    const int before = failures();
    // Sums of up to 33000 float terms, and the online KL's cancellation of terms of the size of
    // the logits / tau.
    TSKD_CHECK_CLOSE(row_loss[n], ref.loss, 3e-5 * std::max(1.0, std::fabs(ref.loss)),
                     "%s row %lld loss", what.c_str(), (long long)n);
    double scale = 1.0;
    for (double g : ref.grad) scale = std::isfinite(g) ? std::max(scale, std::fabs(g)) : scale;
    // log q_k and log p_k carry the float32 rounding of (x_k - max x) / tau, an absolute error
    // that grows with the spread of the logits and that the divergences' log ratios keep: in
    // the gradient, about (S / tau) q_k times it.
    Row q(c.classes, 0.0);
    if (row_max_finite(student.values[n])) q = log_softmax_ref(student.values[n], tau[n]);
    const double log_error = 1e-7 * (o.scale_tau2 ? tau[n] : 1.0 / tau[n]) *
                             (finite_range(student.values[n]) + finite_range(teacher.values[n])) /
                             tau[n];
    for (int64_t k = 0; k < c.classes; ++k) {
      const double got = static_cast<float>(student.data[n * student.stride + k]);
      if (c.compute_grad) {
        const double want = grad_scale * ref.grad[k];
        TSKD_CHECK_CLOSE(got, want,
                         grad_scale * (2e-6 * scale + log_error * std::exp(q[k]) +
                                       rounding * std::fabs(ref.grad[k])),
                         "%s row %lld grad[%lld]", what.c_str(), (long long)n, (long long)k);
      } else if (c.topk == 0) {  // teacher rows leave the logits alone (top-k rows: scratch)
        TSKD_CHECK(
            got == student.values[n][k] || (std::isnan(got) && std::isnan(student.values[n][k])),
            "%s row %lld logit %lld changed without compute_grad", what.c_str(), (long long)n,
            (long long)k);
      }
      if (failures() - before > 3) break;  // one bad row is enough to show
    }
    bad_rows += failures() > before;
  }
  std::printf("  fused_linear_kd %-78s %s\n", what.c_str(), bad_rows ? "FAILED" : "ok");
}

// Every divergence with a KA mode and CE, cycling the other options, for each row length.
template <typename scalar_t>
void shapes_and_options(const std::vector<int64_t>& class_counts, std::mt19937& rng) {
  int variant = 0;
  for (int64_t classes : class_counts) {
    for (int64_t divergence = 0; divergence < 6; ++divergence) {
      FlkdCase c;
      c.classes = classes;
      c.rows = classes > 20000 ? 3 : 7;
      c.row_pad = variant % 3 == 2 ? 1 : 0;
      c.options.divergence = divergence;
      c.options.beta = divergence == 2 ? 0.3 : (divergence >= 3 ? 0.25 * (variant % 4) : 0.5);
      c.options.ka = classes > 1 ? variant % 3 : 0;
      c.options.ce_weight = variant % 2 ? 0.5 : 0.0;
      c.options.scale_tau2 = variant % 4 != 3;
      c.options.lsr_p = 0.85;
      c.has_target = variant % 7 != 6 || c.options.ka != 0 || c.options.ce_weight != 0;
      c.compute_grad = variant % 5 != 4;
      check_case<scalar_t>(c, rng);
      ++variant;
    }
  }
}

// Every block size on one short and one long row, packed and unpacked.
void block_sizes(std::mt19937& rng) {
  for (int threads : {128, 256, 512}) {
    for (int64_t classes : {int64_t(100), int64_t(6003), int64_t(6008)}) {
      FlkdCase c;
      c.rows = 5;
      c.classes = classes;
      c.threads = threads;
      c.options.divergence = threads == 256 ? kJsd : kForwardKl;
      c.options.ka = 1;
      c.options.ce_weight = 0.3;
      check_case<float>(c, rng);
      check_case<c10::BFloat16>(c, rng);
    }
  }
}

template <typename scalar_t>
void topk_teacher(std::mt19937& rng) {
  int variant = 0;
  for (int64_t classes : {int64_t(1), int64_t(9), int64_t(300), int64_t(5000)}) {
    for (int64_t topk : {int64_t(1), int64_t(5), classes}) {
      if (topk > classes || (topk == classes && classes > 300)) continue;
      for (int64_t divergence = 0; divergence < 6; ++divergence) {
        FlkdCase c;
        c.rows = 7;
        c.classes = classes;
        c.topk = topk;
        c.options.divergence = divergence;
        c.options.beta = divergence == 2 ? 0.4 : (divergence >= 3 ? 0.2 : 0.5);
        c.options.ce_weight = variant % 2 ? 0.7 : 0.0;
        c.options.scale_tau2 = variant % 3 != 2;
        c.has_target = variant % 5 != 4 || c.options.ce_weight != 0;
        c.compute_grad = variant % 4 != 3;
        c.row_pad = variant % 3 == 1 ? 1 : 0;
        check_case<scalar_t>(c, rng);
        ++variant;
      }
    }
  }
}

void special_values(std::mt19937& rng) {
  for (int64_t classes : {int64_t(40), int64_t(2000)}) {
    for (int64_t ka : {0, 1, 2}) {
      for (int64_t divergence : {int64_t(kForwardKl), int64_t(kReverseKl), int64_t(kJsd)}) {
        FlkdCase c;
        c.rows = 8;
        c.classes = classes;
        c.options.ka = ka;
        c.options.divergence = divergence;
        c.options.ce_weight = 0.3;
        c.edit = [](std::vector<Row>& s, std::vector<Row>& t, std::vector<int64_t>& labels) {
          const int64_t last = static_cast<int64_t>(s[0].size()) - 1;
          s[0][3] = kNaN;                    // NaN student: NaN row
          t[1][last] = kInf;                 // +inf teacher: NaN row
          for (double& x : s[2]) x = -kInf;  // all -inf student: NaN row
          t[3][7] = -kInf;                   // classes without teacher mass
          t[3][last] = -kInf;
          s[3][7] = -kInf;  // without mass on both sides: 0
          if (labels[3] == 7 || labels[3] == last) labels[3] = 0;
          // Tied teacher maxima in columns owned by different threads: the first is the argmax.
          const int64_t far = last / 2 + 1;
          t[4][far] = t[4][1] = t[4][last] = 20.0;
          labels[4] = 2;
          for (double& x : s[5]) x *= 30.0;                        // large logits
          t[6][0] = kNaN;                                          // NaN teacher: NaN row
          for (int64_t k = 0; k <= last; k += 3) t[7][k] = -kInf;  // a sparse teacher
          s[7][3] = -kInf;                                         // q = 0 where p = 0
          labels[7] = 4;
        };
        check_case<float>(c, rng);
      }
    }
  }
  // Top-k rows with a NaN listed student logit, and with the student's -inf at a tail column.
  FlkdCase c;
  c.rows = 6;
  c.classes = 50;
  c.topk = 4;
  c.options.divergence = kJsd;
  c.options.ce_weight = 0.2;
  c.edit = [](std::vector<Row>& s, std::vector<Row>& t, std::vector<int64_t>& labels) {
    s[0][first_argmax(t[0])] = kNaN;
    s[1][first_argmax(s[1]) == 3 ? 4 : 3] = -kInf;
    labels[1] = 0;
  };
  check_case<float>(c, rng);
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  using namespace tskd_fast::testing;
  std::mt19937 rng(7);
  std::printf("fused_linear_kd, float32:\n");
  shapes_and_options<float>({1, 2, 3, 17, 64, 257, 1000, 4100, 33000}, rng);
  std::printf("fused_linear_kd, float16 and bfloat16:\n");
  shapes_and_options<c10::Half>({5, 33, 1024, 4104}, rng);
  shapes_and_options<c10::BFloat16>({8, 130, 2048}, rng);
  std::printf("fused_linear_kd, block sizes:\n");
  block_sizes(rng);
  std::printf("fused_linear_kd, top-k teacher:\n");
  topk_teacher<float>(rng);
  topk_teacher<c10::BFloat16>(rng);
  std::printf("fused_linear_kd, special values:\n");
  special_values(rng);
  std::printf("test_fused_linear_kd_emulated: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
