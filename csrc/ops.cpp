// Schemas of every tskd_fast op; the device implementations live in cpu/ and cuda/, the autograd
// kernels in autograd/, the fake (meta) kernels in tskd_fast/ops/.
#include <Python.h>
#include <torch/library.h>

#include "cpu/output_pool.h"
#include "python/eager_calls.h"

extern "C" {
// Importing tskd_fast._C loads this library, whose static initialisers register the ops.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr) {
    PyModule_AddIntConstant(module, "WITH_CUDA", TSKD_FAST_WITH_CUDA);
    if (PyModule_AddFunctions(module, tskd_fast::python::eager_call_methods()) != 0) {
      Py_DECREF(module);
      return nullptr;
    }
  }
  return module;
}
}

TORCH_LIBRARY(tskd_fast, m) {
  // The schemas below are typed once more, in the op specs of tskd_fast/ops/<family>.py, from
  // which the Triton twins (tskd_fast::<op>_triton) are defined; tests/test_op_specs.py checks
  // that both agree. Autograd kernels: csrc/autograd/; fake kernels: tskd_fast/ops/<family>.py.
  //
  // Fused KD loss: the per-row losses (float32, float64 for float64 logits) reduced by
  // `reduction` (0 none: (B,), 1 sum, 2 mean: 0-d) and, when compute_grad, grad_scale times the
  // gradient of each row's loss with respect to its student logits (dtype of the logits). ka: 0
  // none, 1 probability shift, 2 label smoothing. temperature: (B,), > 0.
  m.def(
      "kd_loss(Tensor student, Tensor teacher, Tensor? target, Tensor temperature, int ka, "
      "float lsr_p, bool scale_tau2, float ce_weight, int ignore_index, bool compute_grad, "
      "float grad_scale=1., int reduction=0) -> (Tensor loss, Tensor row_grad)");
  // Per-row DTD weight w_n (float32, float64 for float64 logits); mode 0 flsw, 1 cwsm. No
  // gradient.
  m.def(
      "dtd_weight(Tensor student, Tensor teacher, Tensor? target, int mode, float gamma, int ka, "
      "int ignore_index) -> Tensor");
  // The DTD temperatures from those weights: max(t0 + beta (mean(w) - w_n), min_temperature), the
  // mean over the finite weights, t0 where w_n is not finite. No gradient.
  m.def(
      "dtd_temperature(Tensor student, Tensor teacher, Tensor? target, int mode, float gamma, "
      "int ka, int ignore_index, float t0, float beta, float min_temperature) -> Tensor");
  // ConvLSTM gate math after the convolution: gates (B, 4 C_h, H, W) in the order i, f, g, o,
  // c_prev (B, C_h, H, W), optional peepholes (C_h, H, W) or (1, C_h, H, W) -> the new (h, c),
  // in the layout of gates (channels_last or NCHW).
  m.def(
      "convlstm_gates(Tensor gates, Tensor c_prev, Tensor? w_ci=None, Tensor? w_cf=None, "
      "Tensor? w_co=None) -> (Tensor h, Tensor c)");
  // Its backward from the saved inputs alone (the activations are recomputed): an absent grad_h
  // or grad_c is zero. The peephole gradients (batch sums, of the peephole's shape) are computed
  // for the peepholes given when peephole_grads is true, else returned as empty (0,) tensors.
  m.def(
      "convlstm_gates_backward(Tensor? grad_h, Tensor? grad_c, Tensor gates, Tensor c_prev, "
      "Tensor? w_ci, Tensor? w_cf, Tensor? w_co, bool peephole_grads) -> (Tensor grad_gates, "
      "Tensor grad_c_prev, Tensor grad_w_ci, Tensor grad_w_cf, Tensor grad_w_co)");
  // ReviewKD attention fusion: fused = x z_0 + y_up z_1, z = sigmoid(W [x; y_up] + b) per pixel,
  // y_up the nearest upsampling of y to x's size (never materialised). x (N, M, h, w), y (N, M,
  // yh, yw), weight (2, 2M) and bias (2,) of the opmath type. gates: z (N, h * w, 2), opmath.
  m.def("abf_fuse(Tensor x, Tensor y, Tensor weight, Tensor bias) -> (Tensor fused, Tensor gates)");
  // Its gradients from d loss / d fused and the saved gates (grad_weight, grad_bias opmath).
  m.def(
      "abf_fuse_backward(Tensor grad, Tensor x, Tensor y, Tensor weight, Tensor gates) -> "
      "(Tensor grad_x, Tensor grad_y, Tensor grad_weight, Tensor grad_bias)");
  // ReviewKD hierarchical context loss summed over the stage pairs, every level of a pair in one
  // pass: loss (0-d, float32, float64 for float64 maps) and, per pair with compute_grad, grad_scale
  // times d loss / d student_feats[i] (its shape, dtype and layout; else an empty (0,) tensor).
  // The teacher features get no gradient.
  m.def(
      "hcl_loss(Tensor[] student_feats, Tensor[] teacher_feats, int[] levels, bool[] compute_grad, "
      "float grad_scale=1.) -> (Tensor loss, Tensor[] grads)");
  // The CPU kernels' pool of large output blocks (csrc/cpu/output_pool.h): the bytes it holds in
  // released blocks, and returning them all to the system (gives the bytes returned).
  m.def("output_pool_cached_bytes() -> int", &tskd_fast::cpu::output_pool_cached_bytes);
  m.def("release_output_pool() -> int", &tskd_fast::cpu::release_pooled_outputs);
}
