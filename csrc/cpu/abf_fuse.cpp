// tskd_fast::abf_fuse and tskd_fast::abf_fuse_backward on the CPU: checks, the layout, the
// nearest-upsampling index tables, then the kernels of the vector ISA the machine runs.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "abf_hcl_checks.h"
#include "cpu/abf_fuse_args.h"
#include "cpu/isa_dispatch.h"
#include "tskd_fast/abf_math.h"
#include "tskd_fast/checks.h"

namespace tskd_fast::cpu {
namespace {

// src[u * w + v] = the pixel of the (yh, yw) residual that pixel (u, v) of x reads.
std::vector<int32_t> source_pixels(int64_t h, int64_t w, int64_t yh, int64_t yw) {
  std::vector<int32_t> src(h * w);
  std::vector<int64_t> col(w);
  for (int64_t v = 0; v < w; ++v) col[v] = nearest_source(v, yw, w);
  for (int64_t u = 0; u < h; ++u) {
    const int64_t row = nearest_source(u, yh, h) * yw;
    for (int64_t v = 0; v < w; ++v) src[u * w + v] = static_cast<int32_t>(row + col[v]);
  }
  return src;
}

// start[s] = the first row of x that reads residual row s (sources never decrease with the row),
// start[yh] = h.
std::vector<int64_t> row_starts(int64_t h, int64_t yh) {
  std::vector<int64_t> start(yh + 1, h);
  for (int64_t u = h - 1; u >= 0; --u) start[nearest_source(u, yh, h)] = u;
  for (int64_t s = yh - 1; s >= 0; --s) start[s] = std::min(start[s], start[s + 1]);
  return start;
}

std::tuple<at::Tensor, at::Tensor> abf_fuse_cpu(const at::Tensor& x_in, const at::Tensor& y_in,
                                                const at::Tensor& weight_in,
                                                const at::Tensor& bias_in) {
  check_abf_fuse_inputs(x_in, y_in, weight_in, bias_in, "tskd_fast::abf_fuse");
  const bool channels_last = kernel_channels_last(x_in);
  const at::Tensor x = in_kernel_layout(x_in, channels_last);
  const at::Tensor y = in_kernel_layout(y_in, channels_last);
  const at::Tensor weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const int64_t n = x.size(0), m = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t yh = y.size(2), yw = y.size(3);
  const std::vector<int32_t> src = source_pixels(h, w, yh, yw);
  at::Tensor out = empty_in_layout(x.sizes(), x.options(), channels_last);
  at::Tensor gates = at::empty({n, h * w, 2}, weight.options());
  AbfForwardArgs args{};
  args.x = x.data_ptr();
  args.y = y.data_ptr();
  args.weight = weight.data_ptr();
  args.bias = bias.data_ptr();
  args.out = out.data_ptr();
  args.gates = gates.data_ptr();
  args.src = src.data();
  args.n = n;
  args.m = m;
  args.hw = h * w;
  args.yhw = yh * yw;
  args.channels_last = channels_last;
  args.dtype = x.scalar_type();
  TSKD_FAST_CALL_ISA(abf_fuse_forward_kernel, args);
  return {out, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> abf_fuse_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& y_in,
    const at::Tensor& weight_in, const at::Tensor& gates_in) {
  check_abf_fuse_backward_inputs(grad_in, x_in, y_in, weight_in, gates_in,
                                 "tskd_fast::abf_fuse_backward");
  const bool channels_last = kernel_channels_last(x_in);
  const at::Tensor x = in_kernel_layout(x_in, channels_last);
  const at::Tensor y = in_kernel_layout(y_in, channels_last);
  const at::Tensor grad = in_kernel_layout(grad_in, channels_last);
  const at::Tensor weight = weight_in.contiguous(), gates = gates_in.contiguous();
  const int64_t n = x.size(0), m = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t yh = y.size(2), yw = y.size(3);
  const std::vector<int32_t> src = source_pixels(h, w, yh, yw);
  const std::vector<int64_t> start = row_starts(h, yh);
  at::Tensor dx = empty_in_layout(x.sizes(), x.options(), channels_last);
  at::Tensor dy = empty_in_layout(y.sizes(), y.options(), channels_last);
  at::Tensor dweight = at::empty({2, 2 * m}, weight.options());
  at::Tensor dbias = at::empty({2}, weight.options());
  AbfBackwardArgs args{};
  args.grad = grad.data_ptr();
  args.x = x.data_ptr();
  args.y = y.data_ptr();
  args.weight = weight.data_ptr();
  args.gates = gates.data_ptr();
  args.dx = dx.data_ptr();
  args.dy = dy.data_ptr();
  args.dweight = dweight.data_ptr();
  args.dbias = dbias.data_ptr();
  args.src = src.data();
  args.row_start = start.data();
  args.n = n;
  args.m = m;
  args.w = w;
  args.hw = h * w;
  args.yh = yh;
  args.yw = yw;
  args.yhw = yh * yw;
  args.channels_last = channels_last;
  args.dtype = x.scalar_type();
  TSKD_FAST_CALL_ISA(abf_fuse_backward_kernel, args);
  return {dx, dy, dweight, dbias};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CPU, m) {
  m.impl("abf_fuse", &abf_fuse_cpu);
  m.impl("abf_fuse_backward", &abf_fuse_backward_cpu);
}

}  // namespace tskd_fast::cpu
