// torch's argument parser formats its messages with fmt, whose compiled part torch does not
// export: use it header-only.
#define FMT_HEADER_ONLY
#include "python/eager_calls.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/utils/wrap_outputs.h>
#include <torch/csrc/utils/python_arg_parser.h>

#include <optional>
#include <tuple>
#include <vector>

namespace tskd_fast::python {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

// The op's typed handle (each caller keeps it in a static): a call goes through the dispatcher
// (autograd kernel, device kernel, and any Python dispatch mode that is active) as torch.ops would.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// The GIL released while the kernels run, as torch's own functions do.
struct ReleaseGil {
  PyThreadState* state = PyEval_SaveThread();
  ~ReleaseGil() { PyEval_RestoreThread(state); }
};

// Arguments with __torch_function__ (tensor subclasses, function modes) are left to torch.ops,
// which handles them: None tells the caller to take that path.
#define TSKD_FAST_NONE_IF_TORCH_FUNCTION(r) \
  if ((r).has_torch_function()) Py_RETURN_NONE

using KdLossSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                           const OptionalTensor&, const at::Tensor&,
                                                           int64_t, double, bool, double, int64_t,
                                                           bool, double, int64_t);

PyObject* kd_loss(PyObject* /*self*/, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static const auto op = find<KdLossSignature>("tskd_fast::kd_loss");
  static torch::PythonArgParser parser({
      "kd_loss(Tensor student, Tensor teacher, Tensor? target, Tensor temperature, int64_t ka, "
      "double lsr_p, bool scale_tau2, double ce_weight, int64_t ignore_index, bool compute_grad, "
      "double grad_scale, int64_t reduction)",
  });
  torch::ParsedArgs<12> parsed;
  auto r = parser.parse(args, kwargs, parsed);
  TSKD_FAST_NONE_IF_TORCH_FUNCTION(r);
  std::tuple<at::Tensor, at::Tensor> out;
  {
    const at::Tensor student = r.tensor(0), teacher = r.tensor(1), temperature = r.tensor(3);
    const OptionalTensor target = r.optionalTensor(2);
    const int64_t ka = r.toInt64(4), ignore_index = r.toInt64(8), reduction = r.toInt64(11);
    const double lsr_p = r.toDouble(5), ce_weight = r.toDouble(7), grad_scale = r.toDouble(10);
    const bool scale_tau2 = r.toBool(6), compute_grad = r.toBool(9);
    ReleaseGil no_gil;
    out = op.call(student, teacher, target, temperature, ka, lsr_p, scale_tau2, ce_weight,
                  ignore_index, compute_grad, grad_scale, reduction);
  }
  return torch::autograd::utils::wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

using DtdTemperatureSignature = at::Tensor(const at::Tensor&, const at::Tensor&,
                                           const OptionalTensor&, int64_t, double, int64_t, int64_t,
                                           double, double, double);

PyObject* dtd_temperature(PyObject* /*self*/, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static const auto op = find<DtdTemperatureSignature>("tskd_fast::dtd_temperature");
  static torch::PythonArgParser parser({
      "dtd_temperature(Tensor student, Tensor teacher, Tensor? target, int64_t mode, "
      "double gamma, int64_t ka, int64_t ignore_index, double t0, double beta, "
      "double min_temperature)",
  });
  torch::ParsedArgs<10> parsed;
  auto r = parser.parse(args, kwargs, parsed);
  TSKD_FAST_NONE_IF_TORCH_FUNCTION(r);
  at::Tensor out;
  {
    const at::Tensor student = r.tensor(0), teacher = r.tensor(1);
    const OptionalTensor target = r.optionalTensor(2);
    const int64_t mode = r.toInt64(3), ka = r.toInt64(5), ignore_index = r.toInt64(6);
    const double gamma = r.toDouble(4), t0 = r.toDouble(7), beta = r.toDouble(8),
                 min_temperature = r.toDouble(9);
    ReleaseGil no_gil;
    out =
        op.call(student, teacher, target, mode, gamma, ka, ignore_index, t0, beta, min_temperature);
  }
  return THPVariable_Wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

using DtdWeightSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                                      int64_t, double, int64_t, int64_t);

PyObject* dtd_weight(PyObject* /*self*/, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static const auto op = find<DtdWeightSignature>("tskd_fast::dtd_weight");
  static torch::PythonArgParser parser({
      "dtd_weight(Tensor student, Tensor teacher, Tensor? target, int64_t mode, double gamma, "
      "int64_t ka, int64_t ignore_index)",
  });
  torch::ParsedArgs<7> parsed;
  auto r = parser.parse(args, kwargs, parsed);
  TSKD_FAST_NONE_IF_TORCH_FUNCTION(r);
  at::Tensor out;
  {
    const at::Tensor student = r.tensor(0), teacher = r.tensor(1);
    const OptionalTensor target = r.optionalTensor(2);
    const int64_t mode = r.toInt64(3), ka = r.toInt64(5), ignore_index = r.toInt64(6);
    const double gamma = r.toDouble(4);
    ReleaseGil no_gil;
    out = op.call(student, teacher, target, mode, gamma, ka, ignore_index);
  }
  return THPVariable_Wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

using ConvLstmGatesSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&,
                                                                  const at::Tensor&,
                                                                  const OptionalTensor&,
                                                                  const OptionalTensor&,
                                                                  const OptionalTensor&);

PyObject* convlstm_gates(PyObject* /*self*/, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static const auto op = find<ConvLstmGatesSignature>("tskd_fast::convlstm_gates");
  static torch::PythonArgParser parser({
      "convlstm_gates(Tensor gates, Tensor c_prev, Tensor? w_ci, Tensor? w_cf, Tensor? w_co)",
  });
  torch::ParsedArgs<5> parsed;
  auto r = parser.parse(args, kwargs, parsed);
  TSKD_FAST_NONE_IF_TORCH_FUNCTION(r);
  std::tuple<at::Tensor, at::Tensor> out;
  {
    const at::Tensor gates = r.tensor(0), c_prev = r.tensor(1);
    const OptionalTensor w_ci = r.optionalTensor(2), w_cf = r.optionalTensor(3),
                         w_co = r.optionalTensor(4);
    ReleaseGil no_gil;
    out = op.call(gates, c_prev, w_ci, w_cf, w_co);
  }
  return torch::autograd::utils::wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

using AbfFuseSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                            const at::Tensor&, const at::Tensor&);

PyObject* abf_fuse(PyObject* /*self*/, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static const auto op = find<AbfFuseSignature>("tskd_fast::abf_fuse");
  static torch::PythonArgParser parser({
      "abf_fuse(Tensor x, Tensor y, Tensor weight, Tensor bias)",
  });
  torch::ParsedArgs<4> parsed;
  auto r = parser.parse(args, kwargs, parsed);
  TSKD_FAST_NONE_IF_TORCH_FUNCTION(r);
  std::tuple<at::Tensor, at::Tensor> out;
  {
    const at::Tensor x = r.tensor(0), y = r.tensor(1), weight = r.tensor(2), bias = r.tensor(3);
    ReleaseGil no_gil;
    out = op.call(x, y, weight, bias);
  }
  return torch::autograd::utils::wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

using HclLossSignature = std::tuple<at::Tensor, std::vector<at::Tensor>>(
    at::TensorList, at::TensorList, at::IntArrayRef, const c10::List<bool>&, double);

PyObject* hcl_loss(PyObject* /*self*/, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static const auto op = find<HclLossSignature>("tskd_fast::hcl_loss");
  static torch::PythonArgParser parser({
      "hcl_loss(TensorList student_feats, TensorList teacher_feats, IntArrayRef levels, "
      "PyObject* compute_grad, double grad_scale)",
  });
  torch::ParsedArgs<5> parsed;
  auto r = parser.parse(args, kwargs, parsed);
  TSKD_FAST_NONE_IF_TORCH_FUNCTION(r);
  const std::vector<at::Tensor> students = r.tensorlist(0), teachers = r.tensorlist(1);
  const std::vector<int64_t> levels = r.intlist(2);
  c10::List<bool> compute_grad;
  {
    const THPObjectPtr flags(PySequence_Fast(r.pyobject(3), "compute_grad must be a sequence"));
    if (!flags) throw python_error();
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(flags.get()); ++i) {
      compute_grad.push_back(PyObject_IsTrue(PySequence_Fast_GET_ITEM(flags.get(), i)) == 1);
    }
  }
  const double grad_scale = r.toDouble(4);
  std::tuple<at::Tensor, std::vector<at::Tensor>> out;
  {
    ReleaseGil no_gil;
    out = op.call(students, teachers, levels, compute_grad, grad_scale);
  }
  const THPObjectPtr loss(THPVariable_Wrap(std::move(std::get<0>(out))));
  const THPObjectPtr grads(torch::autograd::utils::wrap(at::TensorList(std::get<1>(out))));
  if (!loss || !grads) throw python_error();
  return PyTuple_Pack(2, loss.get(), grads.get());
  END_HANDLE_TH_ERRORS
}

#undef TSKD_FAST_NONE_IF_TORCH_FUNCTION

PyMethodDef methods[] = {
    {"kd_loss", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(kd_loss)),
     METH_VARARGS | METH_KEYWORDS, nullptr},
    {"dtd_weight", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(dtd_weight)),
     METH_VARARGS | METH_KEYWORDS, nullptr},
    {"dtd_temperature",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(dtd_temperature)),
     METH_VARARGS | METH_KEYWORDS, nullptr},
    {"convlstm_gates", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(convlstm_gates)),
     METH_VARARGS | METH_KEYWORDS, nullptr},
    {"abf_fuse", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(abf_fuse)),
     METH_VARARGS | METH_KEYWORDS, nullptr},
    {"hcl_loss", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(hcl_loss)),
     METH_VARARGS | METH_KEYWORDS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyMethodDef* eager_call_methods() { return methods; }

}  // namespace tskd_fast::python
