"""DTD weights and temperatures: every backend against the reference, and their properties; each
backend's weights at the shapes that exercise the Triton kernel's launch paths (several rows per
program, one row in chunks), and what only the Triton kernel has: the label flag, CPU tensors
refused outside the interpreter, and every variant compiled for a real GPU (sm_90) without
register spills."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.row_inputs import labels, opmath
from tests.row_inputs import logits as row_logits
from tests.tolerance import assert_close_to_truth
from tests.triton_aot import compile_for_sm90_without_spills
from tskd_fast import functional as F
from tskd_fast import reference
from tskd_fast.ops import op_for
from tskd_fast.ops.triton._config import MAX_BLOCK_C, row_block_config

BACKENDS = kernel_backends()
TRITON = [b for b in BACKENDS if b == "triton"]

if TRITON:
    from tskd_fast.ops.triton import _launch
    from tskd_fast.ops.triton import dtd as triton_dtd


def logits(rows, classes, dtype=torch.float32, device="cpu"):
    student = (torch.randn(rows, classes, dtype=torch.float64) * 2).to(device=device, dtype=dtype)
    teacher = (torch.randn(rows, classes, dtype=torch.float64) * 2).to(device=device, dtype=dtype)
    target = torch.randint(0, classes, (rows,), device=device)
    target[::4] = -100
    return student, teacher, target


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["flsw", "cwsm"])
@pytest.mark.parametrize("ka", ["none", "ps"])
@pytest.mark.parametrize("rows,classes", [(1, 1), (9, 7), (6, 100), (3, 1001)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_weights_match_reference(backend, mode, ka, rows, classes, dtype):
    device = device_of(backend)
    if dtype == torch.float64 and device != "cpu":
        pytest.skip("float64 runs on the CPU only")
    student, teacher, target = logits(rows, classes, dtype, device)
    w = F.dtd_weight(student, teacher, mode, 2.0, target, ka, backend=backend)
    same = F.dtd_weight(student, teacher, mode, 2.0, target, ka, backend="reference")
    truth = F.dtd_weight(student.double(), teacher.double(), mode, 2.0, target, ka, backend="reference")
    assert w.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close_to_truth(w, same, truth, dtype if dtype != torch.bfloat16 else torch.float32, f"{backend} w")


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
@pytest.mark.parametrize("mode", ["flsw", "cwsm"])
def test_offsets_sum_to_zero_without_clamp(backend, mode):
    device = device_of(backend) if backend != "reference" else "cpu"
    student, teacher, target = logits(33, 50, device=device)
    tau = F.dtd_temperature(student, teacher, t0=200.0, beta=0.7, mode=mode, backend=backend)
    assert tau.shape == (33,)
    assert abs(float((tau - 200.0).sum())) < 1e-3
    assert tau.std() > 0


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_temperature_is_clamped_and_has_no_gradient(backend):
    device = device_of(backend) if backend != "reference" else "cpu"
    student, teacher, _ = logits(16, 100, device=device)
    student.requires_grad_(True)
    tau = F.dtd_temperature(
        student, teacher, t0=1.0, beta=50.0, mode="cwsm", min_temperature=0.25, backend=backend
    )
    assert not tau.requires_grad
    assert float(tau.min()) == pytest.approx(0.25)
    assert bool((tau >= 0.25).all())


def test_harder_rows_get_lower_temperature():
    student = torch.randn(8, 20)
    teacher = student.clone()
    teacher[3] = -student[3]  # the student disagrees with the teacher on row 3
    tau = F.dtd_temperature(student, teacher, t0=4.0, beta=1.0, mode="flsw")
    assert int(tau.argmin()) == 3
    assert float(tau[3]) < 4.0 < float(tau[0])


def test_flsw_sees_the_probability_shifted_teacher():
    student, teacher, target = logits(12, 10)
    wrong = teacher.argmax(1) != target
    wrong &= target != -100
    plain = reference.dtd_weight(student, teacher, target, "flsw", 2.0, "none")
    shifted = reference.dtd_weight(student, teacher, target, "flsw", 2.0, "ps")
    manual = reference.dtd_weight(
        student, reference.probability_shift(teacher, target), None, "flsw", 2.0, "none"
    )
    torch.testing.assert_close(shifted, manual)
    assert torch.equal(plain[~wrong], shifted[~wrong])
    assert wrong.any() and not torch.equal(plain[wrong], shifted[wrong])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(mode="nope"), "mode must be one of"),
        (dict(t0=0.0), "t0 must be finite and > 0"),
        (dict(min_temperature=0.0), "min_temperature must be > 0"),
        (dict(gamma=-1.0), "gamma must be finite and >= 0"),
        (dict(ka="ps"), "needs target labels"),
        (dict(beta=float("nan")), "beta must be finite"),
    ],
)
def test_bad_arguments(kwargs, message):
    student, teacher, _ = logits(4, 5)
    with pytest.raises(ValueError, match=message):
        F.dtd_temperature(student, teacher, **kwargs)


# ---------------------------------------------------------------------------------------------
# The weights of each backend at the Triton kernel's launch paths

KA_NAMES = ("none", "ps", "lsr")


def kernel_weights(backend, student, teacher, target, mode, gamma, ka, config):
    """w (B,) of `backend`'s op, or for Triton the kernel launched with the launch shape `config`
    (on checked inputs)."""
    if backend == "triton":
        return triton_dtd.launch_dtd_weight(student, teacher, target, mode, gamma, ka, -100, config)
    return op_for(backend, "dtd_weight")(student, teacher, target, mode, gamma, ka, -100)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["flsw", "cwsm"])
@pytest.mark.parametrize("ka", ["none", "ps"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(
    "rows,classes,max_block_c", [(13, 37, MAX_BLOCK_C), (3, 37, 8), (2, 4099, MAX_BLOCK_C)]
)
def test_dtd_weight_at_the_launch_shapes_matches_reference(
    backend, mode, ka, dtype, rows, classes, max_block_c
):
    device = device_of(backend)
    if dtype == torch.float64 and device != "cpu":
        pytest.skip("float64 runs on the CPU only")
    student, teacher = (
        row_logits(rows, classes, device, dtype),
        row_logits(rows, classes, device, dtype),
    )
    target = labels(teacher)
    cfg = row_block_config(classes, max_block_c)
    modes = {"flsw": 0, "cwsm": 1}
    w = kernel_weights(backend, student, teacher, target, modes[mode], 2.0, KA_NAMES.index(ka), cfg)
    assert w.dtype == opmath(dtype) and w.shape == (rows,)
    same = reference.dtd_weight(student, teacher, target, mode, 2.0, ka)
    truth = reference.dtd_weight(student.double(), teacher.double(), target, mode, 2.0, ka)
    assert_close_to_truth(w, same, truth, dtype, f"{backend} dtd_weight {mode}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_dtd_weight_through_functional_and_edge_rows(backend):
    device = device_of(backend)
    student, teacher = row_logits(6, 21, device), row_logits(6, 21, device)
    target = labels(teacher)
    teacher[2, [4, 15]] = 40.0  # argmax tie: the first index is swapped
    target[2] = 0
    student[3, 5] = float("nan")
    student[4, :] = float("-inf")
    for mode in ("flsw", "cwsm"):
        for gamma in (0.0, 1.5):
            got = F.dtd_weight(student, teacher, mode, gamma, target, "ps", backend=backend)
            want = reference.dtd_weight(student, teacher, target, mode, gamma, "ps")
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
    tau = F.dtd_temperature(student[:3], teacher[:3], target=target[:3], ka="ps", backend=backend)
    want = reference.dtd_temperature(student[:3], teacher[:3], target=target[:3], ka="ps")
    torch.testing.assert_close(tau, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Only the Triton kernel: the label flag, CPU tensors outside the interpreter, sm_90 builds


def dtd_flag(student, teacher, target, mode, ka):
    flag = _launch.value_flag(student.device)
    triton_dtd.launch_dtd_weight(student, teacher, target, mode, 2.0, ka, -100, flag=flag)
    return int(flag[0])


@pytest.mark.parametrize("backend", TRITON)
@pytest.mark.parametrize("mode", [0, 1])
def test_dtd_kernel_checks_labels_only_with_ka(backend, mode):
    device = device_of(backend)
    student, teacher = row_logits(6, 9, device), row_logits(6, 9, device)
    target = labels(teacher)
    bad = target.clone()
    bad[3] = -7
    assert dtd_flag(student, teacher, target, mode, 1) == 1
    assert dtd_flag(student, teacher, bad, mode, 1) == 0
    assert dtd_flag(student, teacher, bad, mode, 0) == 1  # labels unread, as in the C++ op


@pytest.mark.parametrize("backend", TRITON)
def test_cpu_tensors_outside_the_interpreter_are_refused(backend, monkeypatch):
    if device_of(backend) != "cpu":
        pytest.skip("the interpreter runs here only without a GPU")
    monkeypatch.setattr(triton_dtd, "INTERPRETED", False)
    student, teacher = row_logits(5, 11, "cpu"), row_logits(5, 11, "cpu")
    with pytest.raises(ValueError, match="CPU tensors run only in the Triton interpreter"):
        torch.ops.tskd_fast.dtd_weight_triton(student, teacher, None, 1, 2.0, 0, -100)


_AOT_BODY = """
from tskd_fast.ops.triton import dtd as D
from tskd_fast.ops.triton._config import row_block_config

dtd_sig = {"z_ptr": "*bf16", "v_ptr": "*bf16", "y_ptr": "*i64", "params_ptr": "*fp32",
           "w_ptr": "*fp32", "flag_ptr": "*i32", "n_rows": "i32", "n_cols": "i32", "z_row_stride": "i32",
           "v_row_stride": "i32", "ignore_index": "i32", "gamma_arg": "fp32"}
for classes in (100, 32000):
    cfg = row_block_config(classes)
    for mode, swap in ((0, False), (0, True), (1, False)):
        c = dict(MODE=mode, CHECK_LABELS=swap, SWAP=swap, PARAMS_IN_MEMORY=False, ACC=tl.float32, ROWS=cfg.rows,
                 BLOCK_C=cfg.block_c)
        build(D._dtd_weight_kernel, dtd_sig, c, cfg.num_warps, f"dtd_weight C={classes} mode={mode} swap={swap}")
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", TRITON)
def test_kernels_compile_for_sm90_without_spills(backend):
    compile_for_sm90_without_spills(_AOT_BODY, variants=6)
