#pragma once

// Logit rows for the emulated CUDA row kernels (kd_loss, dtd): an operand in a kernel dtype with a
// chosen row stride and alignment, the dtypes' names and rounding, and a launch under
// cuda_emulation.h. Include after cuda_emulation.h.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "kd_loss_reference.h"

namespace tskd_fast::testing {

// A (rows, classes) operand with a chosen row stride, its first row `offset` elements past a
// 16-byte boundary; `values` holds the rounded values in double for the reference.
template <typename scalar_t>
struct Operand {
  std::vector<scalar_t> storage;
  scalar_t* data = nullptr;
  int64_t stride = 0;
  std::vector<Row> values;

  Operand(const std::vector<Row>& rows, int64_t stride_, int64_t offset) : stride(stride_) {
    const int64_t classes = static_cast<int64_t>(rows[0].size());
    storage.assign(rows.size() * stride + offset + 16, scalar_t(0.0f));
    const uintptr_t base = reinterpret_cast<uintptr_t>(storage.data());
    const int64_t skip = static_cast<int64_t>((16 - base % 16) % 16 / sizeof(scalar_t));
    data = storage.data() + skip + offset;
    for (size_t n = 0; n < rows.size(); ++n) {
      Row rounded(classes);
      for (int64_t k = 0; k < classes; ++k) {
        const scalar_t x = static_cast<scalar_t>(static_cast<float>(rows[n][k]));
        data[n * stride + k] = x;
        rounded[k] = static_cast<double>(static_cast<float>(x));
      }
      values.push_back(rounded);
    }
  }
};

template <typename scalar_t>
const char* dtype_name() {
  if constexpr (std::is_same_v<scalar_t, float>) return "float32";
  if constexpr (std::is_same_v<scalar_t, c10::Half>) return "float16";
  return "bfloat16";
}

// Relative rounding of one output element in the logits dtype.
template <typename scalar_t>
double output_rounding() {
  if constexpr (std::is_same_v<scalar_t, float>) return 0.0;
  if constexpr (std::is_same_v<scalar_t, c10::Half>) return 1.0 / 1024;
  return 1.0 / 128;
}

template <typename Params, typename Launcher>
void run_emulated(const Params& p, Launcher&& launcher) {
  launcher(p, [&](auto kernel, int64_t blocks, int threads) {
    cuda_emulation::launch(blocks, threads, [&] { kernel(p); });
  });
}

}  // namespace tskd_fast::testing
