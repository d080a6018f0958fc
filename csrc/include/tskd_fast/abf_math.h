#pragma once

#include <cmath>
#include <cstdint>

#include "tskd_fast/macros.h"
#include "tskd_fast/scalar_math.h"

// Per-pixel math of ReviewKD's attention fusion (docs/methods.md §2.2), shared by the CPU
// and CUDA kernels:
//   a_k = b_k + sum_c W[k, c] x_c + sum_c W[k, M + c] y_up_c,  z_k = sigmoid(a_k),
//   fused_c = x_c z_0 + y_up_c z_1.
namespace tskd_fast {

// The source index that nearest upsampling from `in` to `out` elements reads for output `dst`,
// exactly as F.interpolate(mode="nearest") computes it (ATen's nearest_idx): identity and the
// exact 2x case by integers, otherwise floor(dst * scale) with scale = in / out in float, clamped.
TSKD_HD int64_t nearest_source(int64_t dst, int64_t in, int64_t out) {
  if (out == in) return dst;
  if (out == 2 * in) return dst >> 1;
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  const int64_t src = static_cast<int64_t>(floorf(static_cast<float>(dst) * scale));
  return src < in - 1 ? src : in - 1;
}

template <typename T>
TSKD_HD T sigmoid(T a) {
  return T(1) / (T(1) + math_exp(-a));
}

// d loss / d a_k from d loss / d z_k: the sigmoid's derivative z (1 - z).
template <typename T>
TSKD_HD T gate_logit_grad(T grad_gate, T gate) {
  return grad_gate * gate * (T(1) - gate);
}

// The weights of one channel c of the 1x1 attention conv: the x' and y_up columns of both gates.
template <typename T>
struct AbfChannelWeights {
  T x0, x1;  // W[0, c], W[1, c]
  T y0, y1;  // W[0, M + c], W[1, M + c]
};

// `weight` is (2, 2M) row-major.
template <typename T>
TSKD_HD AbfChannelWeights<T> abf_channel_weights(const T* weight, int64_t m, int64_t c) {
  return {weight[c], weight[2 * m + c], weight[m + c], weight[3 * m + c]};
}

// The gradient of one channel of x' and y_up at a pixel: the gate path and the attention path.
//   d x'_c   = g_c z_0 + W[0, c] da_0 + W[1, c] da_1
//   d y_up_c = g_c z_1 + W[0, M + c] da_0 + W[1, M + c] da_1
template <typename T>
TSKD_HD T abf_grad_x(const AbfChannelWeights<T>& w, T g, T z0, T da0, T da1) {
  return g * z0 + w.x0 * da0 + w.x1 * da1;
}

template <typename T>
TSKD_HD T abf_grad_y(const AbfChannelWeights<T>& w, T g, T z1, T da0, T da1) {
  return g * z1 + w.y0 * da0 + w.y1 * da1;
}

}  // namespace tskd_fast
