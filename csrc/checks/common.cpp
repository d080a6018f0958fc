#include <c10/util/Exception.h>

#include <sstream>

#include "tskd_fast/checks.h"

namespace tskd_fast {

std::string py_shape(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << '(';
  for (size_t i = 0; i < sizes.size(); ++i) out << (i > 0 ? ", " : "") << sizes[i];
  out << (sizes.size() == 1 ? ",)" : ")");
  return out.str();
}

std::string py_dtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "torch.float32";
    case at::kDouble:
      return "torch.float64";
    case at::kHalf:
      return "torch.float16";
    case at::kBFloat16:
      return "torch.bfloat16";
    case at::kLong:
      return "torch.int64";
    case at::kInt:
      return "torch.int32";
    case at::kShort:
      return "torch.int16";
    case at::kChar:
      return "torch.int8";
    case at::kByte:
      return "torch.uint8";
    case at::kBool:
      return "torch.bool";
    case at::kComplexFloat:
      return "torch.complex64";
    case at::kComplexDouble:
      return "torch.complex128";
    default:
      return std::string("torch.") + c10::toString(dtype);
  }
}

at::ScalarType opmath_type(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

bool is_kernel_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 ||
         dtype == at::kDouble;
}

void check_feature_map(const at::Tensor& t, const std::string& name) {
  TORCH_CHECK_VALUE(t.dim() == 4, name, " must be 4-D (N, C, H, W), got shape ",
                    py_shape(t.sizes()));
  TORCH_CHECK_VALUE(is_kernel_dtype(t.scalar_type()), name,
                    " must be float32, float16, bfloat16 or float64, got ",
                    py_dtype(t.scalar_type()));
  TORCH_CHECK_VALUE(t.numel() > 0, name, " is empty (shape ", py_shape(t.sizes()), ")");
  TORCH_CHECK_VALUE(t.scalar_type() != at::kDouble || t.device().is_cpu(), "float64 ", name,
                    " is supported on the CPU only");
}

void check_dtype_and_device(const at::Tensor& t, const std::string& name, const at::Tensor& ref,
                            const std::string& ref_name, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, name, " must be ", py_dtype(dtype), ", got ",
                    py_dtype(t.scalar_type()));
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name,
                    " is on ", ref.device());
}

}  // namespace tskd_fast
