// The CUDA DTD-weight kernel (csrc/cuda/dtd_kernels.cuh), run on the host under cuda_emulation.h,
// against the double-precision reference (dtd_reference.h): short rows several to a block and
// long rows a block each, packed and unpacked rows, float32/float16/bfloat16, both modes and the
// probability shift. GPU-only matters need a GPU run of tests/test_dtd.py.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

// clang-format off
// The emulation must come before the kernel sources: it defines __global__, __shared__, ...
#include "cuda_emulation.h"
#include "cuda/dtd_kernels.cuh"
// clang-format on
#include "dtd_reference.h"
#include "row_operands.h"
#include "test_check.h"

namespace tskd_fast::testing {
namespace {

using cuda::DtdParams;

template <typename scalar_t>
void check_dtd_case(int64_t rows, int64_t classes, int64_t row_pad, int64_t mode, int64_t ka,
                    double gamma, std::mt19937& rng) {
  std::normal_distribution<double> normal(0.0, 3.0);
  std::vector<Row> z(rows, Row(classes)), v(rows, Row(classes));
  std::vector<int64_t> labels(rows);
  for (int64_t n = 0; n < rows; ++n) {
    for (int64_t k = 0; k < classes; ++k) {
      z[n][k] = normal(rng);
      v[n][k] = normal(rng);
    }
    labels[n] = n % 4 == 3 ? -100 : static_cast<int64_t>(rng() % classes);
    if (n % 3 == 1) labels[n] = first_argmax(v[n]);
  }
  const Operand<scalar_t> student(z, classes + row_pad, 0), teacher(v, classes + row_pad, 0);
  std::vector<float> weight(rows, -1.0f);
  DtdParams<scalar_t> p{};
  p.student = student.data;
  p.teacher = teacher.data;
  p.student_stride = student.stride;
  p.teacher_stride = teacher.stride;
  p.target = labels.data();
  p.weight = weight.data();
  p.rows = rows;
  p.classes = classes;
  p.mode = mode;
  p.gamma = static_cast<float>(gamma);
  p.ka = ka;
  p.ignore_index = -100;
  p.aligned = cuda::rows_take_packs<scalar_t>(p.student, p.student_stride, p.classes) &&
              cuda::rows_take_packs<scalar_t>(p.teacher, p.teacher_stride, p.classes);
  run_emulated(p,
               [](const auto& params, auto&& launch) { cuda::launch_dtd_weight(params, launch); });
  int bad = 0;
  for (int64_t n = 0; n < rows; ++n) {
    const double ref = dtd_weight_reference(student.values[n], teacher.values[n], labels[n], mode,
                                            gamma, ka, -100);
    const int before = failures();
    TSKD_CHECK_CLOSE(weight[n], ref, 2e-5 * std::max(1.0, std::fabs(ref)),
                     "dtd %s C=%lld mode=%lld ka=%lld row %lld", dtype_name<scalar_t>(),
                     (long long)classes, (long long)mode, (long long)ka, (long long)n);
    bad += failures() > before;
  }
  std::printf("  dtd_weight %s B=%lld C=%lld %s mode=%lld ka=%lld: %s\n", dtype_name<scalar_t>(),
              (long long)rows, (long long)classes, p.aligned ? "packed" : "unpacked",
              (long long)mode, (long long)ka, bad ? "FAILED" : "ok");
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  using namespace tskd_fast::testing;
  std::mt19937 rng(42);
  std::printf("dtd_weight:\n");
  for (int64_t classes : {1, 5, 16, 33, 100, 1000, 4096, 4097}) {
    for (int64_t mode : {0, 1}) {
      for (int64_t ka : {0, 1, 2}) {
        if (mode == 1 && ka != 0) continue;
        check_dtd_case<float>(classes <= 64 ? 37 : 5, classes, classes % 2, mode, ka, 2.0, rng);
      }
    }
  }
  check_dtd_case<c10::Half>(9, 1000, 0, 0, 1, 1.5, rng);
  check_dtd_case<c10::BFloat16>(9, 5000, 0, 1, 0, 2.0, rng);
  std::printf("test_dtd_emulated: %d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}
