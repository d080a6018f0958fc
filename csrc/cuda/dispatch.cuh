#pragma once

// The logits dtypes the CUDA kernels take (float64 is CPU-only and rejected by the shared
// checks), without instantiating the kernels for double as AT_DISPATCH_FLOATING_TYPES would.
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

namespace tskd_fast::cuda {

// Calls f(scalar_t{}) for the scalar type of `dtype`.
template <typename F>
void dispatch_logits_dtype(c10::ScalarType dtype, const char* op, F&& f) {
  switch (dtype) {
    case c10::ScalarType::Float:
      f(float{});
      break;
    case c10::ScalarType::Half:
      f(c10::Half{});
      break;
    case c10::ScalarType::BFloat16:
      f(c10::BFloat16{});
      break;
    default:
      TORCH_CHECK(false, op, ": CUDA kernels take float32, float16 or bfloat16 logits, got ",
                  dtype);
  }
}

}  // namespace tskd_fast::cuda
