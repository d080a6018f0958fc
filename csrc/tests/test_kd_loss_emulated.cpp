// The CUDA KD-loss kernels (csrc/cuda/kd_loss_kernels.cuh), run on the host under
// cuda_emulation.h, against the double-precision reference (kd_loss_reference.h): every row-group
// configuration (4 to 32 lanes with registers, block loops of 256 and 512 threads), packed and
// unpacked rows, tail rows in a block, float32/float16/bfloat16, the knowledge-adjustment and CE
// options, and the NaN, +inf and -inf conventions. It checks the kernels' logic (indexing,
// reductions, per-row math); GPU-only matters (occupancy, the device's exp2f, races the emulation's
// sequential fibers cannot show) need a GPU run of tests/test_kd_loss_kernels.py.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

// clang-format off
// The emulation must come before the kernel sources: it defines __global__, __shared__, ...
#include "cuda_emulation.h"
#include "cuda/kd_loss_kernels.cuh"
// clang-format on
#include "kd_loss_reference.h"
#include "row_operands.h"
#include "test_check.h"

namespace tskd_fast::testing {
namespace {

using cuda::KdParams;

struct KdCase {
  int64_t rows;
  int64_t classes;
  int64_t row_pad = 0;  // extra elements per row (a row stride that breaks packing when odd)
  int64_t offset = 0;   // elements between a 16-byte boundary and the first row
  KdOptions options;
  bool has_target = true;
  bool compute_grad = true;
  double spread = 3.0;
  // Edits the double rows (student, teacher) and labels before they are stored.
  std::function<void(std::vector<Row>&, std::vector<Row>&, std::vector<int64_t>&)> edit;
};

template <typename scalar_t>
void check_kd_case(const KdCase& c, std::mt19937& rng) {
  std::normal_distribution<double> normal(0.0, c.spread);
  std::uniform_real_distribution<double> uniform(0.5, 4.0);
  std::vector<Row> z(c.rows, Row(c.classes)), v(c.rows, Row(c.classes));
  std::vector<int64_t> labels(c.rows);
  std::vector<float> tau(c.rows);
  for (int64_t n = 0; n < c.rows; ++n) {
    for (int64_t k = 0; k < c.classes; ++k) {
      z[n][k] = normal(rng);
      v[n][k] = normal(rng);
    }
    labels[n] = static_cast<int64_t>(rng() % c.classes);
    if (n % 5 == 4) labels[n] = c.options.ignore_index;
    if (n % 3 == 1) labels[n] = first_argmax(v[n]);  // KA leaves these rows alone
    tau[n] = n % 4 == 2 ? 1.0f : static_cast<float>(uniform(rng));
  }
  if (c.edit) c.edit(z, v, labels);
  const Operand<scalar_t> student(z, c.classes + c.row_pad, c.offset);
  const Operand<scalar_t> teacher(v, c.classes + c.row_pad, c.offset);
  std::vector<float> row_loss(c.rows, -1.0f);
  // at::empty memory: 16-byte aligned, contiguous.
  Operand<scalar_t> grad(std::vector<Row>(c.rows, Row(c.classes, -7.0)), c.classes, 0);

  KdParams<scalar_t> p{};
  p.student = student.data;
  p.teacher = teacher.data;
  p.student_stride = student.stride;
  p.teacher_stride = teacher.stride;
  p.target = c.has_target ? labels.data() : nullptr;
  p.temperature = tau.data();
  p.row_loss = row_loss.data();
  p.row_grad = c.compute_grad ? grad.data : nullptr;
  p.rows = c.rows;
  p.classes = c.classes;
  p.ka = c.options.ka;
  p.ignore_index = c.options.ignore_index;
  p.smoothed = smoothed_target<float>(static_cast<float>(c.options.lsr_p), c.classes);
  p.ce_weight = static_cast<float>(c.options.ce_weight);
  // A reduction's factor (1/B for batchmean) is folded into the written gradient.
  const double grad_scale = c.compute_grad ? 1.0 / static_cast<double>(c.rows) : 1.0;
  p.grad_scale = static_cast<float>(grad_scale);
  p.scale_tau2 = c.options.scale_tau2;
  p.aligned =
      cuda::rows_take_packs<scalar_t>(p.student, p.student_stride, p.classes) &&
      cuda::rows_take_packs<scalar_t>(p.teacher, p.teacher_stride, p.classes) &&
      (p.row_grad == nullptr || cuda::rows_take_packs<scalar_t>(p.row_grad, p.classes, p.classes));
  p.need_argmax = p.target != nullptr && p.ka != kKaNone;
  run_emulated(p, [](const auto& params, auto&& launch) { cuda::launch_kd_loss(params, launch); });

  const std::string what =
      std::string(dtype_name<scalar_t>()) + " B=" + std::to_string(c.rows) +
      " C=" + std::to_string(c.classes) + (p.aligned ? " packed" : " unpacked") +
      " ka=" + std::to_string(c.options.ka) + " ce=" + std::to_string(c.options.ce_weight) +
      (c.has_target ? "" : " no-target");
  const double rounding = output_rounding<scalar_t>();
  int bad_rows = 0;
  for (int64_t n = 0; n < c.rows; ++n) {
    const int64_t label = c.has_target ? labels[n] : c.options.ignore_index;
    const KdRowResult ref =
        kd_row_reference(student.values[n], teacher.values[n], label, tau[n], c.options);
    const int before = failures();
    // Sums of up to 9000 float terms: a few 1e-6 relative; the float32 floor of the Python tests.
    TSKD_CHECK_CLOSE(row_loss[n], ref.loss, 3e-5 * std::max(1.0, std::fabs(ref.loss)),
                     "%s row %lld loss", what.c_str(), (long long)n);
    if (c.compute_grad) {
      double scale = 1.0;
      for (double g : ref.grad) scale = std::isfinite(g) ? std::max(scale, std::fabs(g)) : scale;
      for (int64_t k = 0; k < c.classes; ++k) {
        const double got = static_cast<float>(grad.data[n * c.classes + k]);
        const double want = grad_scale * ref.grad[k];
        TSKD_CHECK_CLOSE(got, want, grad_scale * (2e-6 * scale + rounding * std::fabs(ref.grad[k])),
                         "%s row %lld grad[%lld]", what.c_str(), (long long)n, (long long)k);
        if (failures() - before > 3) break;  // one bad row is enough to show
      }
    }
    bad_rows += failures() > before;
  }
  std::printf("  kd_loss %-60s %s\n", what.c_str(), bad_rows ? "FAILED" : "ok");
}

// Enough rows to fill one block of the configuration the row length takes, plus a tail block.
int64_t rows_for(int64_t classes, int pack) {
  if (classes > cuda::kMaxItemsPerLane * 32) return 3;  // a block per row
  int64_t lanes = 4;
  while (lanes < 32 && lanes * pack < classes) lanes *= 2;
  return cuda::kShortRowBlock / lanes + 3;
}

template <typename scalar_t>
void kd_shapes_and_options(const std::vector<int64_t>& class_counts, std::mt19937& rng) {
  constexpr int kPack = cuda::kPack<scalar_t>;
  int variant = 0;
  for (int64_t classes : class_counts) {
    for (int64_t row_pad : {int64_t(0), int64_t(1)}) {
      KdCase c;
      c.classes = classes;
      c.rows = rows_for(classes, kPack);
      c.row_pad = row_pad;
      c.options.ka = variant % 3;
      c.options.ce_weight = variant % 2 ? 0.5 : 0.0;
      c.options.scale_tau2 = variant % 4 != 3;
      c.options.lsr_p = 0.85;
      c.has_target = variant % 7 != 6 || c.options.ka != 0 || c.options.ce_weight != 0;
      c.compute_grad = variant % 5 != 4;
      check_kd_case<scalar_t>(c, rng);
      ++variant;
    }
  }
}

void kd_special_values(std::mt19937& rng) {
  for (int64_t classes : {40, 2000}) {
    for (int64_t ka : {0, 1, 2}) {
      KdCase c;
      c.rows = 8;
      c.classes = classes;
      c.options.ka = ka;
      c.options.ce_weight = 0.3;
      c.edit = [](std::vector<Row>& z, std::vector<Row>& v, std::vector<int64_t>& labels) {
        const int64_t last = static_cast<int64_t>(z[0].size()) - 1;
        z[0][3] = kNaN;                    // NaN student: NaN row
        v[1][last] = kInf;                 // +inf teacher: NaN row
        for (double& x : z[2]) x = -kInf;  // all -inf student: NaN row
        v[3][7] = -kInf;                   // masked teacher classes
        v[3][last] = -kInf;
        z[3][7] = -kInf;  // masked for both: still 0
        if (labels[3] == 7 || labels[3] == last) labels[3] = 0;
        z[4][5] = -kInf;  // student -inf with teacher mass: +inf loss
        if (labels[4] == 5) labels[4] = 1;
        v[5][0] = v[5][1] = v[5][2] = 10.0;  // tied teacher maxima: the first is the argmax
        labels[5] = 2;
        for (double& x : z[6]) x *= 100.0;  // large logits
        v[7][0] = kNaN;                     // NaN teacher: NaN row
      };
      check_kd_case<float>(c, rng);
    }
  }
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  using namespace tskd_fast::testing;
  std::mt19937 rng(42);
  std::printf("kd_loss, float32:\n");
  kd_shapes_and_options<float>(
      {1, 3, 4, 5, 16, 17, 33, 64, 100, 128, 130, 256, 257, 513, 1000, 1024, 1025, 5000, 9000},
      rng);
  std::printf("kd_loss, float16 and bfloat16:\n");
  kd_shapes_and_options<c10::Half>({3, 8, 33, 100, 256, 1000, 1024, 1030, 9000}, rng);
  kd_shapes_and_options<c10::BFloat16>({5, 64, 513, 1024, 2048}, rng);
  std::printf("kd_loss, special values:\n");
  kd_special_values(rng);
  std::printf("test_kd_loss_emulated: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
