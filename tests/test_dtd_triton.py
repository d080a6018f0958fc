"""Triton-specific tests of tskd_fast::dtd_weight_triton and dtd_temperature_triton.

The backend-generic checks live in test_dtd.py and test_dtd_ops.py; these cover what only the
Triton kernel has: its launch shapes (several rows per program, one row in chunks) against the
reference, edge rows through the functional, CPU tensors refused outside the interpreter, and
that every kernel variant compiles for a real GPU (sm_90) without register spills.
"""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tests.triton_aot import compile_for_sm90_without_spills
from tskd_fast import functional as F
from tskd_fast import reference

pytestmark = pytest.mark.skipif("triton" not in kernel_backends(), reason="triton cannot run here")

if "triton" in kernel_backends():
    from tskd_fast.ops.triton import _launch
    from tskd_fast.ops.triton import dtd as triton_dtd
    from tskd_fast.ops.triton._config import MAX_BLOCK_C, row_block_config
else:
    MAX_BLOCK_C = 4096

DEVICE = device_of("triton")
KA_NAMES = ("none", "ps", "lsr")


def opmath(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def logits(rows, classes, dtype=torch.float32, spread=3.0):
    return (torch.randn(rows, classes, dtype=torch.float64) * spread).to(device=DEVICE, dtype=dtype)


def labels(teacher, ignore_index=-100):
    """Labels with ignored rows, rows the teacher gets right and rows it gets wrong."""
    rows, classes = teacher.shape
    target = torch.randint(0, classes, (rows,), device=DEVICE)
    if rows > 2:
        target[::4] = ignore_index
        right = torch.arange(1, rows, 3, device=DEVICE)
        target[right] = teacher[right].float().argmax(dim=1)
    return target


@pytest.mark.parametrize("mode", ["flsw", "cwsm"])
@pytest.mark.parametrize("ka", ["none", "ps"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(
    "rows,classes,max_block_c", [(13, 37, MAX_BLOCK_C), (3, 37, 8), (2, 4099, MAX_BLOCK_C)]
)
def test_dtd_weight_matches_reference(mode, ka, dtype, rows, classes, max_block_c):
    if dtype == torch.float64 and DEVICE != "cpu":
        pytest.skip("float64 runs on the CPU only")
    student, teacher = logits(rows, classes, dtype), logits(rows, classes, dtype)
    target = labels(teacher)
    cfg = row_block_config(classes, max_block_c)
    modes = {"flsw": 0, "cwsm": 1}
    w = triton_dtd.launch_dtd_weight(
        student, teacher, target, modes[mode], 2.0, KA_NAMES.index(ka), -100, cfg
    )
    assert w.dtype == opmath(dtype) and w.shape == (rows,)
    same = reference.dtd_weight(student, teacher, target, mode, 2.0, ka)
    truth = reference.dtd_weight(student.double(), teacher.double(), target, mode, 2.0, ka)
    assert_close_to_truth(w, same, truth, dtype, f"dtd_weight {mode}")


def test_dtd_weight_through_functional_and_edge_rows():
    student, teacher = logits(6, 21), logits(6, 21)
    target = labels(teacher)
    teacher[2, [4, 15]] = 40.0  # argmax tie: the first index is swapped
    target[2] = 0
    student[3, 5] = float("nan")
    student[4, :] = float("-inf")
    for mode in ("flsw", "cwsm"):
        for gamma in (0.0, 1.5):
            got = F.dtd_weight(student, teacher, mode, gamma, target, "ps", backend="triton")
            want = reference.dtd_weight(student, teacher, target, mode, gamma, "ps")
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
    tau = F.dtd_temperature(student[:3], teacher[:3], target=target[:3], ka="ps", backend="triton")
    want = reference.dtd_temperature(student[:3], teacher[:3], target=target[:3], ka="ps")
    torch.testing.assert_close(tau, want, rtol=1e-5, atol=1e-6)


def dtd_flag(student, teacher, target, mode, ka):
    flag = _launch.value_flag(student.device)
    triton_dtd.launch_dtd_weight(student, teacher, target, mode, 2.0, ka, -100, flag=flag)
    return int(flag[0])


@pytest.mark.parametrize("mode", [0, 1])
def test_dtd_kernel_checks_labels_only_with_ka(mode):
    student, teacher = logits(6, 9), logits(6, 9)
    target = labels(teacher)
    bad = target.clone()
    bad[3] = -7
    assert dtd_flag(student, teacher, target, mode, 1) == 1
    assert dtd_flag(student, teacher, bad, mode, 1) == 0
    assert dtd_flag(student, teacher, bad, mode, 0) == 1  # labels unread, as in the C++ op


def test_cpu_tensors_outside_the_interpreter_are_refused(monkeypatch):
    if DEVICE != "cpu":
        pytest.skip("the interpreter runs here only without a GPU")
    monkeypatch.setattr(triton_dtd, "INTERPRETED", False)
    student, teacher = logits(5, 11), logits(5, 11)
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
def test_kernels_compile_for_sm90_without_spills():
    compile_for_sm90_without_spills(_AOT_BODY, variants=6)
