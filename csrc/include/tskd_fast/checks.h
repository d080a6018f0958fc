#pragma once

#include <ATen/core/Tensor.h>

#include <string>

// What every op's input checks share. The checks raise ValueError (TORCH_CHECK_VALUE) with the
// words of the op's Python check (tskd_fast/ops/<family>.py), which guards the Triton ops and the
// reference path: shapes, dtypes and devices are printed as Python prints them, so that one bad
// input reads the same on every backend (tests/test_op_checks.py compares the two).
namespace tskd_fast {

// "(5, 11)", "(5,)", "()": a shape as Python prints a tuple.
std::string py_shape(at::IntArrayRef sizes);
// "torch.float32": a dtype as Python prints it.
std::string py_dtype(at::ScalarType dtype);

// The float type the kernels compute in for inputs of dtype `dtype`: float64 for float64, float32
// otherwise.
at::ScalarType opmath_type(at::ScalarType dtype);

bool is_kernel_dtype(at::ScalarType dtype);  // float32, float16, bfloat16 or float64

// A (N, C, H, W) feature map `name` of a kernel dtype (float64 on the CPU only), not empty.
void check_feature_map(const at::Tensor& t, const std::string& name);
// `t` (named `name`) has dtype `dtype` and the device of `ref` (named `ref_name`).
void check_dtype_and_device(const at::Tensor& t, const std::string& name, const at::Tensor& ref,
                            const std::string& ref_name, at::ScalarType dtype);

}  // namespace tskd_fast
