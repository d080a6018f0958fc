"""What tskd_fast.ops.library adds around the ops.

- The eager entry points of the C++ ops (tskd_fast._C.<op>, csrc/python/eager_calls.cpp): plain
  positional arguments are read directly, anything else (keywords, numpy scalars) by torch's
  argument parser, with the same result; a tensor subclass or a torch function mode makes the
  entry hand the call back (None) and library.call takes torch.ops, which honours them.
- The device guard around every Triton op, entered with the inputs' CUDA device around the output
  allocation and the launch (Triton launches on the current device, and torch.library.custom_op
  adds no guard). Without a GPU the guard is checked with a stand-in for torch.cuda.device; with
  two GPUs, for real.
"""

import contextlib

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.conftest import device_of, kernel_backends
from tests.row_inputs import row_sample
from tskd_fast.ops import SPECS, call, op_for

BACKENDS = kernel_backends()
TRITON = [b for b in BACKENDS if b == "triton"]
needs_triton = pytest.mark.skipif(not TRITON, reason="triton cannot run here")
needs_cpp = pytest.mark.skipif("cpu" not in BACKENDS, reason="tskd_fast._C is not built")

if TRITON:
    from tskd_fast.ops import common, library
    from tskd_fast.ops.triton import _launch
    from tskd_fast.ops.triton import dtd as triton_dtd
    from tskd_fast.ops.triton import kd_loss as triton_kd


# ---------------------------------------------------------------------------------------------
# The eager entry points of the C++ ops


def entry_cases():
    """(op name, positional arguments) of every op with an entry point, on small CPU inputs."""
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    y = torch.randint(0, 7, (5,))
    tau = torch.rand(5) + 0.5
    g, c = torch.randn(2, 12, 3, 4), torch.randn(2, 3, 3, 4)
    x, r = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 3, 3)
    return [
        ("kd_loss", (s, t, y, tau, 1, 0.9, True, 0.5, -100, True, 0.2, 2)),
        ("dtd_weight", (s, t, y, 0, 2.0, 1, -100)),
        ("dtd_temperature", (s, t, y, 0, 2.0, 1, -100, 4.0, 1.0, 0.1)),
        ("convlstm_gates", (g, c, torch.randn(3, 3, 4), None, torch.randn(3, 3, 4))),
        ("abf_fuse", (x, r, torch.randn(2, 8), torch.randn(2))),
    ]


def outputs(out):
    return list(out) if isinstance(out, tuple | list) else [out]


def assert_same(got, want):
    for a, b in zip(outputs(got), outputs(want), strict=True):
        assert torch.equal(a, b)


class Marked(torch.Tensor):
    """A tensor subclass: it has __torch_function__."""


class Seen(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@needs_cpp
@pytest.mark.parametrize("name,args", entry_cases(), ids=[name for name, _ in entry_cases()])
def test_entry_reads_plain_keyword_and_numpy_arguments_alike(name, args):
    entry = library_entry(name)
    want = op_for("cpu", name)(*args)
    assert_same(entry(*args), want)
    schema = torch._C.parse_schema(f"tskd_fast::{name}{SPECS[name].schema}")
    keywords = {a.name: v for a, v in zip(schema.arguments, args, strict=True)}
    assert_same(entry(**keywords), want)
    if any(type(a) in (int, float) for a in args):  # numpy scalars: not plain, so parsed
        numpy_scalars = tuple(
            np.float64(a) if type(a) is float else np.int64(a) if type(a) is int else a for a in args
        )
        assert_same(entry(*numpy_scalars), want)


@needs_cpp
@pytest.mark.parametrize("name,args", entry_cases(), ids=[name for name, _ in entry_cases()])
def test_entry_hands_subclasses_and_function_modes_to_torch_ops(name, args):
    entry = library_entry(name)
    marked = (args[0].as_subclass(Marked), *args[1:])
    assert entry(*marked) is None
    got = call(SPECS[name], "cpu", marked)
    assert_same([o.as_subclass(torch.Tensor) for o in outputs(got)], outputs(op_for("cpu", name)(*args)))
    with Seen() as seen:
        assert entry(*args) is None
        call(SPECS[name], "cpu", args)
    assert seen.names, "the mode saw no call"


@needs_cpp
def test_entry_rejects_bad_argument_types():
    entry = library_entry("kd_loss")
    s, t, tau = torch.randn(4, 5), torch.randn(4, 5), torch.full((4,), 2.0)
    with pytest.raises(TypeError, match="must be Tensor, not str"):
        entry("logits", t, None, tau, 0, 0.9, True, 0.0, -100, False, 1.0, 0)
    with pytest.raises(TypeError):
        entry(s, t, None, tau, "ps", 0.9, True, 0.0, -100, False, 1.0, 0)
    with pytest.raises(ValueError, match="Overflow"):
        entry(s, t, None, tau, 2**70, 0.9, True, 0.0, -100, False, 1.0, 0)


def library_entry(name):
    import tskd_fast._C

    return getattr(tskd_fast._C, name)


# ---------------------------------------------------------------------------------------------
# The device guard of the Triton ops


class _Recorder:
    """Stands in for torch.cuda.device: records the device it is entered with."""

    def __init__(self):
        self.entered = []
        self.active = False

    def __call__(self, device):
        recorder = self

        class _Guard:
            def __enter__(self):
                recorder.entered.append(device)
                recorder.active = True

            def __exit__(self, *exc):
                recorder.active = False

        return _Guard()


class _OnCuda1:
    """Stands in for a tensor on cuda:1 (what the guard reads of it)."""

    device = torch.device("cuda", 1)
    is_cuda = True


@needs_triton
def test_guard_makes_the_tensors_cuda_device_current(monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(torch.cuda, "device", recorder)
    with common.device_guard(_OnCuda1()):
        assert recorder.active
    assert recorder.entered == [torch.device("cuda", 1)] and not recorder.active
    with common.device_guard(torch.ones(2)):  # CPU tensors (the interpreter): no CUDA call
        pass
    assert recorder.entered == [torch.device("cuda", 1)]


@needs_triton
@pytest.mark.parametrize("which", ["kd_loss", "dtd_weight"])
def test_ops_allocate_and_launch_inside_the_guard(monkeypatch, which):
    """The ops enter the guard with the student's device, and the flag, the outputs and the
    launch all happen inside it."""
    module = triton_kd if which == "kd_loss" else triton_dtd
    recorder = _Recorder()
    seen = []

    @contextlib.contextmanager
    def guard(tensor):
        with recorder(tensor.device):
            yield

    def inside(name, fn):
        def wrapped(*args, **kwargs):
            seen.append((name, recorder.active))
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(library, "device_guard", guard)
    monkeypatch.setattr(module, "value_flag", inside("flag", _launch.value_flag))
    launch = "launch_kd_loss" if which == "kd_loss" else "launch_dtd_weight"
    monkeypatch.setattr(module, launch, inside("launch", getattr(module, launch)))
    student, teacher, target, tau = row_sample(device_of("triton"))
    if which == "kd_loss":
        torch.ops.tskd_fast.kd_loss_triton(student, teacher, target, tau, 1, 0.9, True, 0.5, -100, True)
    else:
        torch.ops.tskd_fast.dtd_weight_triton(student, teacher, target, 0, 2.0, 1, -100)
    assert recorder.entered == [student.device]
    assert seen == [("flag", True), ("launch", True)]


@needs_triton
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_triton_ops_run_on_the_inputs_device():
    from tskd_fast import functional as F

    torch.cuda.set_device(0)
    student = torch.randn(8, 33, device="cuda:1")
    teacher = torch.randn(8, 33, device="cuda:1")
    loss = F.kd_loss(student, teacher, reduction="none", backend="triton")
    want = F.kd_loss(student.cpu(), teacher.cpu(), reduction="none", backend="reference")
    assert loss.device == student.device
    torch.testing.assert_close(loss.cpu(), want, rtol=1e-5, atol=1e-5)
    w = F.dtd_weight(student, teacher, backend="triton")
    torch.testing.assert_close(w.cpu(), F.dtd_weight(student.cpu(), teacher.cpu(), backend="reference"))
