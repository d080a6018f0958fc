"""How the Triton kd_loss and dtd_weight ops launch: value checks folded into the kernels (one
error flag, named by the op spec's value check), and the device guard that tskd_fast.ops.library
puts around output allocation and launch.

Without a GPU the kernels run in the Triton interpreter; the CUDA-side behaviour (one asynchronous
assert on the flag, the guard entered with a CUDA device) is checked with stand-ins, and for real
by the GPU-only tests at the end (scripts/gpu_check.sh runs them).
"""

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.conftest import device_of, kernel_backends

pytestmark = pytest.mark.skipif("triton" not in kernel_backends(), reason="triton cannot run here")

if "triton" in kernel_backends():
    from tskd_fast.ops import common, library
    from tskd_fast.ops.triton import _launch
    from tskd_fast.ops.triton import dtd as triton_dtd
    from tskd_fast.ops.triton import kd_loss as triton_kd

DEVICE = device_of("triton")
REPO = Path(__file__).resolve().parents[1]
KD_OP = "tskd_fast::kd_loss_triton"


def sample(rows=6, classes=9):
    student = torch.randn(rows, classes, device=DEVICE) * 2
    teacher = torch.randn(rows, classes, device=DEVICE) * 2
    target = torch.randint(0, classes, (rows,), device=DEVICE)
    target[0] = -100
    tau = torch.rand(rows, device=DEVICE) * 3 + 0.5
    return student, teacher, target, tau


def kd_flag(student, teacher, target, tau, ka=1):
    flag = _launch.value_flag(student.device)
    triton_kd.launch_kd_loss(student, teacher, target, tau, ka, 0.9, True, 0.5, -100, True, flag=flag)
    return int(flag[0])


# ---------------------------------------------------------------------------------------------
# The error flag written by the kernels


@pytest.mark.parametrize("ka", [0, 1, 2])
def test_kd_kernel_clears_the_flag_on_a_bad_label_or_temperature(ka):
    student, teacher, target, tau = sample()
    assert kd_flag(student, teacher, target, tau, ka) == 1
    assert kd_flag(student, teacher, None, tau, 0) == 1
    assert kd_flag(student, teacher, torch.full_like(target, -100), tau, ka) == 1  # all ignored
    for label in (9, -1, 10**6):
        bad = target.clone()
        bad[4] = label
        assert kd_flag(student, teacher, bad, tau, ka) == 0, label
    for value in (0.0, -1.0, float("nan"), float("inf")):
        bad = tau.clone()
        bad[5] = value
        assert kd_flag(student, teacher, target, bad, ka) == 0, value
        assert kd_flag(student, teacher, None, bad, 0) == 0, value


def test_kd_kernel_flags_a_bad_row_in_any_program():
    """Rows of several programs (a multi-row tile and one row per program): the last row counts."""
    for classes in (9, 3000):
        student, teacher, target, tau = sample(rows=70, classes=classes)
        target[69] = classes
        assert kd_flag(student, teacher, target, tau) == 0


# ---------------------------------------------------------------------------------------------
# What the ops do with the flag


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


CHECK_OPS = {"ne", "eq", "lt", "le", "gt", "ge", "isfinite", "any", "all", "bitwise_and", "logical_and"}


@pytest.mark.skipif(DEVICE != "cpu", reason="counts the ops of the interpreter path")
def test_valid_calls_run_no_separate_value_checks():
    student, teacher, target, tau = sample()
    with _CountOps() as kd_ops:
        torch.ops.tskd_fast.kd_loss_triton(student, teacher, target, tau, 1, 0.9, True, 0.5, -100, True)
    with _CountOps() as dtd_ops:
        torch.ops.tskd_fast.dtd_weight_triton(student, teacher, target, 0, 2.0, 1, -100)
    for names in (kd_ops.names, dtd_ops.names):
        assert names, "the op ran no aten op at all: the mode saw nothing"
        assert not CHECK_OPS & set(names), names


def test_inputs_are_searched_only_when_the_kernel_flags(monkeypatch):
    """The named errors come from the flag: with the host search stubbed out, a valid call never
    reaches it and a bad one still fails, with the fallback message."""
    calls = []
    monkeypatch.setattr(triton_kd, "name_bad_value", lambda *args: calls.append("kd_loss"))
    monkeypatch.setattr(triton_dtd, "name_bad_value", lambda *args: calls.append("dtd_weight"))
    student, teacher, target, tau = sample()
    if DEVICE != "cpu":
        pytest.skip("on CUDA the flag is asserted on the device (test_cuda_flag_is_one_async_assert)")
    torch.ops.tskd_fast.kd_loss_triton(student, teacher, target, tau, 1, 0.9, True, 0.5, -100, True)
    torch.ops.tskd_fast.dtd_weight_triton(student, teacher, target, 0, 2.0, 1, -100)
    assert calls == []
    bad = target.clone()
    bad[2] = 99
    with pytest.raises(RuntimeError, match=f"{KD_OP}: the kernel flagged an invalid value"):
        torch.ops.tskd_fast.kd_loss_triton(student, teacher, bad, tau, 1, 0.9, True, 0.5, -100, True)
    assert calls == ["kd_loss"]
    with pytest.raises(RuntimeError, match="dtd_weight_triton: the kernel flagged"):
        torch.ops.tskd_fast.dtd_weight_triton(student, teacher, bad, 1, 2.0, 1, -100)
    assert calls == ["kd_loss", "dtd_weight"]


def test_a_flagged_value_is_named_by_the_spec_check():
    if DEVICE != "cpu":
        pytest.skip("on CUDA the flag is asserted on the device (test_cuda_flag_is_one_async_assert)")
    student, teacher, target, tau = sample()
    bad = target.clone()
    bad[2] = 99
    with pytest.raises(ValueError, match=r"target\[2\] = 99 is out of range"):
        torch.ops.tskd_fast.kd_loss_triton(student, teacher, bad, tau, 1, 0.9, True, 0.5, -100, True)
    with pytest.raises(ValueError, match=r"target\[2\] = 99 is out of range"):
        torch.ops.tskd_fast.dtd_weight_triton(student, teacher, bad, 1, 2.0, 1, -100)
    bad_tau = tau.clone()
    bad_tau[4] = 0.0
    with pytest.raises(ValueError, match=r"temperature must be finite and > 0, got temperature\[4\] = 0"):
        torch.ops.tskd_fast.kd_loss_triton(student, teacher, target, bad_tau, 1, 0.9, True, 0.5, -100, True)


def test_cuda_flag_is_one_async_assert(monkeypatch):
    """A flag on a non-CPU device is never read on the host: one _assert_async with the op name."""
    asserted = []
    monkeypatch.setattr(torch, "_assert_async", lambda flag, message: asserted.append((flag, message)))
    flag = torch.ones((1,), dtype=torch.int32, device="meta")  # values unreadable, like CUDA's

    def never_called():
        raise AssertionError("the host search ran for a device flag")

    _launch.raise_if_flagged(flag, KD_OP, triton_kd._WHAT, never_called)
    _launch.raise_if_flagged(flag, "tskd_fast::dtd_weight_triton", triton_dtd._WHAT, never_called)
    assert [f is flag for f, _ in asserted] == [True, True]
    assert asserted[0][1].startswith(f"{KD_OP}: a target label is out of range")
    assert "temperature" in asserted[0][1] and "temperature" not in asserted[1][1]


# ---------------------------------------------------------------------------------------------
# The device guard


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
    device = torch.device("cuda", 1)


def test_guard_makes_the_tensors_cuda_device_current(monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(torch.cuda, "device", recorder)
    with common.device_guard(_OnCuda1()):
        assert recorder.active
    assert recorder.entered == [torch.device("cuda", 1)] and not recorder.active
    with common.device_guard(torch.ones(2)):  # CPU tensors (the interpreter): no CUDA call
        pass
    assert recorder.entered == [torch.device("cuda", 1)]


@pytest.mark.parametrize("which", ["kd_loss", "dtd_weight"])
def test_ops_allocate_and_launch_inside_the_guard(monkeypatch, which):
    """Both ops enter the guard with the student's device, and the flag, the outputs and the
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


# ---------------------------------------------------------------------------------------------
# On a GPU (skipped without one)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

_ASSERT_SCRIPT = textwrap.dedent(
    """
    import torch
    import tskd_fast.ops.triton.kd_loss  # registers the op
    z = torch.randn(4, 7, device="cuda")
    y = torch.tensor([0, 1, 7, 2], device="cuda")
    tau = torch.ones(4, device="cuda")
    torch.ops.tskd_fast.kd_loss_triton(z, z, y, tau, 0, 0.9, True, 0.0, -100, False)
    print("launched", flush=True)
    torch.cuda.synchronize()
    print("no assert")
    """
)


@needs_cuda
def test_bad_label_on_cuda_fails_an_async_assert():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _ASSERT_SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert "launched" in done.stdout and "no assert" not in done.stdout, done.stdout + done.stderr
    assert done.returncode != 0 and "assert" in done.stderr.lower(), done.stderr[-2000:]


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
