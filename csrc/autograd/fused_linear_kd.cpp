// tskd_fast::fused_linear_kd_rows has no gradient formula: it is a kernel of the chunked driver op
// (tskd_fast/ops/fused_linear_kd.py), which owns the gradient and reads what the row op writes
// over the student logits. torch's not-implemented kernels make differentiating through the row
// op itself raise at backward, and writing over a leaf that requires grad raise at once, instead
// of the silent None gradient of an op without an autograd kernel.
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

TORCH_LIBRARY_IMPL(tskd_fast, Autograd, m) {
  m.impl("fused_linear_kd_rows", torch::autograd::autogradNotImplementedFallback());
}

TORCH_LIBRARY_IMPL(tskd_fast, ADInplaceOrView, m) {
  m.impl("fused_linear_kd_rows", torch::autograd::autogradNotImplementedInplaceOrViewFallback());
}
