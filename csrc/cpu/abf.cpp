// tskd_fast::abf_fuse and tskd_fast::abf_fuse_backward on the CPU: checks, the layout, the
// nearest-upsampling index tables, then the kernels of the vector ISA the machine runs.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "cpu/abf_args.h"
#include "cpu/isa_dispatch.h"
#include "tskd_fast/abf_checks.h"
#include "tskd_fast/abf_math.h"
#include "tskd_fast/layout.h"

namespace tskd_fast::cpu {
namespace {

// start[s] = the first row of x that reads residual row s (sources never decrease with the row),
// start[yh] = h. The same for columns.
std::vector<int64_t> row_starts(int64_t h, int64_t yh) {
  std::vector<int64_t> start(yh + 1, h);
  for (int64_t u = h - 1; u >= 0; --u) start[nearest_source(u, yh, h)] = u;
  for (int64_t s = yh - 1; s >= 0; --s) start[s] = std::min(start[s], start[s + 1]);
  return start;
}

// The index tables of the nearest upsampling of y to x, and the geometry the kernels read.
struct Upsampling {
  std::vector<int32_t> src;  // src[u * w + v] = the pixel of y that pixel (u, v) of x reads
  std::vector<int64_t> row_start, col_start;
  AbfGeometry geometry{};  // points into the tables above

  Upsampling(const Upsampling&) = delete;
  Upsampling& operator=(const Upsampling&) = delete;
  Upsampling(const at::Tensor& x, const at::Tensor& y, bool channels_last) {
    const int64_t h = x.size(2), w = x.size(3), yh = y.size(2), yw = y.size(3);
    src.resize(h * w);
    for (int64_t u = 0; u < h; ++u) {
      const int64_t row = nearest_source(u, yh, h) * yw;
      for (int64_t v = 0; v < w; ++v)
        src[u * w + v] = static_cast<int32_t>(row + nearest_source(v, yw, w));
    }
    row_start = row_starts(h, yh);
    col_start = row_starts(w, yw);
    geometry.src = src.data();
    geometry.row_start = row_start.data();
    geometry.col_start = col_start.data();
    geometry.n = x.size(0);
    geometry.m = x.size(1);
    geometry.w = w;
    geometry.hw = h * w;
    geometry.yh = yh;
    geometry.yw = yw;
    geometry.yhw = yh * yw;
    geometry.tile_pixels = abf_tile_pixels(x.size(1));
    geometry.channels_last = channels_last;
    geometry.dtype = x.scalar_type();
  }
};

// The residual rows of each backward task: NCHW groups consecutive rows while the rows of x that
// read them fit one tile (a row that alone overflows a tile is a group of its own); channels_last
// keeps one row per task.
std::vector<int64_t> residual_row_groups(const AbfGeometry& g) {
  std::vector<int64_t> groups{0};
  int64_t pixels = 0;
  for (int64_t s = 0; s < g.yh; ++s) {
    const int64_t row_pixels = (g.row_start[s + 1] - g.row_start[s]) * g.w;
    if (s > groups.back() && (g.channels_last || pixels + row_pixels > g.tile_pixels)) {
      groups.push_back(s);
      pixels = 0;
    }
    pixels += row_pixels;
  }
  groups.push_back(g.yh);
  return groups;
}

std::tuple<at::Tensor, at::Tensor> abf_fuse_cpu(const at::Tensor& x_in, const at::Tensor& y_in,
                                                const at::Tensor& weight_in,
                                                const at::Tensor& bias_in) {
  check_abf_fuse_inputs(x_in, y_in, weight_in, bias_in);
  const bool channels_last = kernel_channels_last(x_in);
  const at::Tensor x = in_kernel_layout(x_in, channels_last);
  const at::Tensor y = in_kernel_layout(y_in, channels_last);
  const at::Tensor weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const Upsampling up(x, y, channels_last);
  at::Tensor out = empty_in_layout(x.sizes(), x.options(), channels_last);
  at::Tensor gates = at::empty({x.size(0), up.geometry.hw, 2}, weight.options());
  AbfForwardArgs args{};
  static_cast<AbfGeometry&>(args) = up.geometry;
  args.x = x.data_ptr();
  args.y = y.data_ptr();
  args.weight = weight.data_ptr();
  args.bias = bias.data_ptr();
  args.out = out.data_ptr();
  args.gates = gates.data_ptr();
  TSKD_FAST_CALL_ISA(abf_fuse_forward_kernel, args);
  return {out, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> abf_fuse_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& y_in,
    const at::Tensor& weight_in, const at::Tensor& gates_in) {
  check_abf_fuse_backward_inputs(grad_in, x_in, y_in, weight_in, gates_in);
  const bool channels_last = kernel_channels_last(x_in);
  const at::Tensor x = in_kernel_layout(x_in, channels_last);
  const at::Tensor y = in_kernel_layout(y_in, channels_last);
  const at::Tensor grad = in_kernel_layout(grad_in, channels_last);
  const at::Tensor weight = weight_in.contiguous(), gates = gates_in.contiguous();
  const Upsampling up(x, y, channels_last);
  const std::vector<int64_t> groups = residual_row_groups(up.geometry);
  at::Tensor dx = empty_in_layout(x.sizes(), x.options(), channels_last);
  at::Tensor dy = empty_in_layout(y.sizes(), y.options(), channels_last);
  at::Tensor dweight = at::empty({2, 2 * x.size(1)}, weight.options());
  at::Tensor dbias = at::empty({2}, weight.options());
  AbfBackwardArgs args{};
  static_cast<AbfGeometry&>(args) = up.geometry;
  args.grad = grad.data_ptr();
  args.x = x.data_ptr();
  args.y = y.data_ptr();
  args.weight = weight.data_ptr();
  args.gates = gates.data_ptr();
  args.dx = dx.data_ptr();
  args.dy = dy.data_ptr();
  args.dweight = dweight.data_ptr();
  args.dbias = dbias.data_ptr();
  args.group_start = groups.data();
  args.groups = static_cast<int64_t>(groups.size()) - 1;
  args.max_group_rows = 0;
  for (int64_t g = 0; g < args.groups; ++g) {
    args.max_group_rows = std::max(args.max_group_rows, groups[g + 1] - groups[g]);
  }
  TSKD_FAST_CALL_ISA(abf_fuse_backward_kernel, args);
  return {dx, dy, dweight, dbias};
}

}  // namespace

TORCH_LIBRARY_IMPL(tskd_fast, CPU, m) {
  m.impl("abf_fuse", &abf_fuse_cpu);
  m.impl("abf_fuse_backward", &abf_fuse_backward_cpu);
}

}  // namespace tskd_fast::cpu
