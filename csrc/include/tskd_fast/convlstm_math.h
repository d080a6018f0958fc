#pragma once

#include <cmath>

#include "tskd_fast/macros.h"
#include "tskd_fast/scalar_math.h"

// Per-element math of the fused ConvLSTM gate op (docs/methods.md §3.4). With a_i, a_f, a_g,
// a_o the pre-activations of one pixel and channel and c_prev its cell state:
//   i = sigmoid(a_i + w_ci c_prev), f = sigmoid(a_f + w_cf c_prev), g = tanh(a_g),
//   c = f c_prev + i g,  o = sigmoid(a_o + w_co c),  h = o tanh(c).
// The backward recomputes the activations from the pre-activations (nothing else is saved):
//   k = tanh(c), da_o = dh k o (1 - o), dc = dc_next + dh o (1 - k^2) + da_o w_co,
//   da_i = dc g i (1 - i), da_f = dc c_prev f (1 - f), da_g = dc i (1 - g^2),
//   dc_prev = dc f + da_i w_ci + da_f w_cf;
// and the peephole gradients are the batch sums of da_i c_prev, da_f c_prev and da_o c.
//
// The functions are written once for a value type V and a policy Ops with the few operations
// beyond + - * / that they need: ScalarGateOps below for one float or double (the CPU tail, the
// CUDA kernels, the C++ tests), and a SIMD policy in the CPU kernels. Every exponential has a
// non-positive argument, so a fast exp that only covers x <= 0 serves.

namespace tskd_fast {

template <typename T>
struct ScalarGateOps {
  // The policy gives sigmoid and tanh itself (true) or only the primitives below (false).
  static constexpr bool kOwnActivations = false;
  // exp(x) for x <= 0 (or NaN).
  static TSKD_HD T exp_nonpositive(T x) { return math_exp(x); }
  // -|x|; NaN stays NaN.
  static TSKD_HD T neg_abs(T x) { return x > T(0) ? -x : x; }
  // x >= 0 ? a : b.
  static TSKD_HD T select_nonnegative(T x, T a, T b) { return x >= T(0) ? a : b; }
  // t (>= 0) with the sign of x.
  static TSKD_HD T with_sign_of(T t, T x) { return x < T(0) ? -t : t; }
};

// sigmoid(x) from e = exp(-|x|) in (0, 1]: 1 / (1 + e) for x >= 0, e / (1 + e) below, so that
// no exponential overflows and the small side keeps its relative precision.
template <class Ops, typename V>
TSKD_HD V gate_sigmoid(V x) {
  if constexpr (Ops::kOwnActivations) return Ops::sigmoid(x);
  const V e = Ops::exp_nonpositive(Ops::neg_abs(x));
  const V r = V(1) / (V(1) + e);
  return Ops::select_nonnegative(x, r, e * r);
}

// tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|).
template <class Ops, typename V>
TSKD_HD V gate_tanh(V x) {
  if constexpr (Ops::kOwnActivations) return Ops::tanh(x);
  const V e = Ops::exp_nonpositive(V(2) * Ops::neg_abs(x));
  return Ops::with_sign_of((V(1) - e) / (V(1) + e), x);
}

template <typename V>
struct GateState {
  V h;
  V c;
};

// The input, forget and candidate gates and the new cell state of one cell update: the part that
// does not need a_o. kPeepholes false leaves the w_* arguments unread (pass anything).
template <typename V>
struct InputGates {
  V i;
  V f;
  V g;
  V c;
};

template <class Ops, bool kPeepholes, typename V>
TSKD_HD InputGates<V> convlstm_input_gates(V a_i, V a_f, V a_g, V c_prev, V w_ci, V w_cf) {
  if constexpr (kPeepholes) {
    a_i = a_i + w_ci * c_prev;
    a_f = a_f + w_cf * c_prev;
  }
  const V i = gate_sigmoid<Ops>(a_i);
  const V f = gate_sigmoid<Ops>(a_f);
  const V g = gate_tanh<Ops>(a_g);
  return {i, f, g, f * c_prev + i * g};
}

// The output gate, which sees the new cell state c through its peephole.
template <class Ops, bool kPeepholes, typename V>
TSKD_HD V convlstm_output_gate(V a_o, V c, V w_co) {
  if constexpr (kPeepholes) a_o = a_o + w_co * c;
  return gate_sigmoid<Ops>(a_o);
}

// One cell update. kPeepholes false leaves the w_* arguments unread (pass anything).
template <class Ops, bool kPeepholes, typename V>
TSKD_HD GateState<V> convlstm_cell(V a_i, V a_f, V a_g, V a_o, V c_prev, V w_ci, V w_cf, V w_co) {
  const InputGates<V> s = convlstm_input_gates<Ops, kPeepholes>(a_i, a_f, a_g, c_prev, w_ci, w_cf);
  const V o = convlstm_output_gate<Ops, kPeepholes>(a_o, s.c, w_co);
  return {o * gate_tanh<Ops>(s.c), s.c};
}

template <typename V>
struct GateGrads {
  V a_i;
  V a_f;
  V a_g;
  V a_o;
  V c_prev;
  V c;  // the recomputed new cell state, which the gradient of w_co needs
};

// The gradients of one cell update from its recomputed gates s and o and the incoming dh and
// dc_next (0 where a gradient is absent). kPeepholes false leaves the w_* arguments unread.
template <class Ops, bool kPeepholes, typename V>
TSKD_HD GateGrads<V> convlstm_gate_grads(const InputGates<V>& s, V o, V c_prev, V w_ci, V w_cf,
                                         V w_co, V dh, V dc_next) {
  const V one(1);
  const V i = s.i, f = s.f, g = s.g;
  const V k = gate_tanh<Ops>(s.c);
  const V dh_o = dh * o;
  const V da_o = dh_o * k * (one - o);
  V dc = dc_next + dh_o * (one - k * k);
  if constexpr (kPeepholes) dc = dc + da_o * w_co;
  const V dc_i = dc * i;
  GateGrads<V> out{};
  out.a_i = dc_i * g * (one - i);
  out.a_f = dc * c_prev * f * (one - f);
  out.a_g = dc_i * (one - g * g);
  out.a_o = da_o;
  out.c_prev = dc * f;
  if constexpr (kPeepholes) out.c_prev = out.c_prev + out.a_i * w_ci + out.a_f * w_cf;
  out.c = s.c;
  return out;
}

// The gradients of one cell update from the incoming dh and dc_next (0 where a gradient is
// absent). kPeepholes false leaves the w_* arguments unread.
template <class Ops, bool kPeepholes, typename V>
TSKD_HD GateGrads<V> convlstm_cell_backward(V a_i, V a_f, V a_g, V a_o, V c_prev, V w_ci, V w_cf,
                                            V w_co, V dh, V dc_next) {
  const InputGates<V> s = convlstm_input_gates<Ops, kPeepholes>(a_i, a_f, a_g, c_prev, w_ci, w_cf);
  const V o = convlstm_output_gate<Ops, kPeepholes>(a_o, s.c, w_co);
  return convlstm_gate_grads<Ops, kPeepholes>(s, o, c_prev, w_ci, w_cf, w_co, dh, dc_next);
}

}  // namespace tskd_fast
