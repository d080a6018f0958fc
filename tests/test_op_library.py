"""What tskd_fast.ops.library adds around every Triton op: the device guard, entered with the inputs'
CUDA device around the output allocation and the launch (Triton launches on the current device,
and torch.library.custom_op adds no guard). Without a GPU the guard is checked with a stand-in for
torch.cuda.device; with two GPUs, for real."""

import contextlib

import pytest
import torch

from tests.conftest import device_of, kernel_backends

TRITON = [b for b in kernel_backends() if b == "triton"]
pytestmark = pytest.mark.skipif(not TRITON, reason="triton cannot run here")

if TRITON:
    from tskd_fast.ops import common, library
    from tskd_fast.ops.triton import _launch
    from tskd_fast.ops.triton import dtd as triton_dtd
    from tskd_fast.ops.triton import kd_loss as triton_kd


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


def test_guard_makes_the_tensors_cuda_device_current(monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(torch.cuda, "device", recorder)
    with common.device_guard(_OnCuda1()):
        assert recorder.active
    assert recorder.entered == [torch.device("cuda", 1)] and not recorder.active
    with common.device_guard(torch.ones(2)):  # CPU tensors (the interpreter): no CUDA call
        pass
    assert recorder.entered == [torch.device("cuda", 1)]


def sample(rows=6, classes=9):
    device = device_of("triton")
    student = torch.randn(rows, classes, device=device) * 2
    teacher = torch.randn(rows, classes, device=device) * 2
    target = torch.randint(0, classes, (rows,), device=device)
    target[0] = -100
    tau = torch.rand(rows, device=device) * 3 + 0.5
    return student, teacher, target, tau


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
    student, teacher, target, tau = sample()
    if which == "kd_loss":
        torch.ops.tskd_fast.kd_loss_triton(student, teacher, target, tau, 1, 0.9, True, 0.5, -100, True)
    else:
        torch.ops.tskd_fast.dtd_weight_triton(student, teacher, target, 0, 2.0, 1, -100)
    assert recorder.entered == [student.device]
    assert seen == [("flag", True), ("launch", True)]


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
