"""Triton-specific tests of tskd_fast::kd_loss_triton.

The backend-generic checks live in test_kd_loss_kernels.py and test_kd_loss_ops.py; these cover
what only the Triton kernel has: the launch-shape choice, the multi-row tile and the chunked
(online) long-row path forced on small inputs, CPU tensors refused outside the interpreter, and
that every kernel variant compiles for a real GPU (sm_90) without register spills. Without a GPU
the kernels run in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET).
"""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tests.triton_aot import compile_for_sm90_without_spills
from tskd_fast import reference
from tskd_fast.ops.common import with_unit_class_stride

pytestmark = pytest.mark.skipif("triton" not in kernel_backends(), reason="triton cannot run here")

if "triton" in kernel_backends():
    from tskd_fast.ops.triton import kd_loss as triton_kd
    from tskd_fast.ops.triton._config import MAX_BLOCK_C, row_block_config

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


def reference_rows(student, teacher, target, tau, ka, lsr_p, scale_tau2, ce_weight, ignore_index, dtype):
    """(row_loss, d row_loss_n / d z_n) from the PyTorch reference, computed in `dtype`."""
    z = student.detach().to(dtype).requires_grad_(True)
    loss = reference.kd_loss(
        z,
        teacher.to(dtype),
        target,
        tau.to(dtype),
        KA_NAMES[ka],
        lsr_p,
        "tau2" if scale_tau2 else "none",
        ce_weight,
        ignore_index,
        "none",
    )
    (grad,) = torch.autograd.grad(loss.sum(), z)
    return loss.detach(), grad


def check_launch(student, teacher, target, tau, ka, config, lsr_p=0.9, scale_tau2=True, ce_weight=0.5):
    """The kernel under `config` against the reference (same precision and float64 truth)."""
    dtype = student.dtype
    loss, grad = triton_kd.launch_kd_loss(
        student, teacher, target, tau, ka, lsr_p, scale_tau2, ce_weight, -100, True, config=config
    )
    assert loss.dtype == opmath(dtype) and grad.dtype == dtype and grad.shape == student.shape
    args = (student, teacher, target, tau, ka, lsr_p, scale_tau2, ce_weight, -100)
    loss_ref, grad_ref = reference_rows(*args, opmath(dtype))
    loss_64, grad_64 = reference_rows(*args, torch.float64)
    assert_close_to_truth(loss, loss_ref, loss_64, dtype, "row_loss")
    assert_close_to_truth(grad, grad_ref.to(dtype), grad_64, dtype, "row_grad")


# ---------------------------------------------------------------------------------------------
# Launch shapes


def test_block_config_covers_every_path():
    short = row_block_config(37)
    assert short.single_chunk and short.rows > 1 and short.block_c == 64
    assert row_block_config(1).block_c >= 1 and row_block_config(1).single_chunk
    for classes in (2048, MAX_BLOCK_C):
        wide = row_block_config(classes)
        assert wide.single_chunk and wide.rows == 1 and wide.block_c == classes
    long = row_block_config(32000)
    assert not long.single_chunk and long.rows == 1 and long.block_c == MAX_BLOCK_C
    assert not row_block_config(4097).single_chunk
    forced = row_block_config(37, max_block_c=8)
    assert not forced.single_chunk and forced.block_c == 8 and forced.rows == 1
    for classes in (1, 3, 17, 100, 1000, 2049, 4096, 5000, 100000):
        cfg = row_block_config(classes)
        assert cfg.block_c & (cfg.block_c - 1) == 0 and cfg.rows & (cfg.rows - 1) == 0
        assert cfg.single_chunk == (classes <= cfg.block_c)
        # Multi-row tiles stay at about 4 elements per thread (register pressure, see _config).
        assert cfg.rows == 1 or cfg.rows * cfg.block_c <= 4 * 32 * cfg.num_warps
    with pytest.raises(ValueError):
        row_block_config(0)
    with pytest.raises(ValueError):
        row_block_config(10, max_block_c=12)


# ---------------------------------------------------------------------------------------------
# kd_loss: multi-row tiles and the chunked path


@pytest.mark.parametrize("ka", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_multi_row_tile_with_partial_last_program(ka, dtype):
    rows, classes = 21, 37
    cfg = row_block_config(classes)
    assert cfg.single_chunk and cfg.rows > 1 and rows % cfg.rows != 0
    student, teacher = logits(rows, classes, dtype), logits(rows, classes, dtype)
    target = labels(teacher)
    tau = torch.rand(rows, device=DEVICE, dtype=opmath(dtype)) * 3 + 0.5
    check_launch(student, teacher, target, tau, ka, cfg)


@pytest.mark.parametrize("ka", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("classes", [37, 40])
def test_chunked_path_on_short_rows(ka, dtype, classes):
    """Chunks of 8 columns: the online maxima move between chunks, the last chunk is partial
    (37) or full (40)."""
    rows = 6
    cfg = row_block_config(classes, max_block_c=8)
    assert not cfg.single_chunk
    student, teacher = logits(rows, classes, dtype), logits(rows, classes, dtype)
    # Rising maxima: the row maximum sits in the last chunk, so every chunk rescales the sums.
    ramp = torch.linspace(0, 6, classes, device=DEVICE).to(dtype)
    student, teacher = student + ramp, teacher + ramp.flip(0)
    target = labels(teacher)
    tau = torch.rand(rows, device=DEVICE, dtype=opmath(dtype)) * 3 + 0.5
    check_launch(student, teacher, target, tau, ka, cfg)
    check_launch(student, teacher, target, tau, ka, cfg, scale_tau2=False, ce_weight=0.0)


def test_chunked_path_with_masked_chunks_ties_and_bad_rows():
    rows, classes = 6, 30
    cfg = row_block_config(classes, max_block_c=8)
    student, teacher = logits(rows, classes), logits(rows, classes)
    teacher[0, :16] = float("-inf")  # the first two chunks carry no target mass
    student[1, :8] = float("-inf")  # a masked student chunk where the teacher is masked too
    teacher[1, :8] = float("-inf")
    teacher[2, [3, 12, 25]] = 50.0  # a tie across chunks: argmax is the first index, 3
    student[4, 20] = float("nan")  # a bad row found in a later chunk
    student[5, :] = float("-inf")  # a row of only -inf
    target = labels(teacher)
    target[2] = 9  # wrong, so ps swaps columns 3 and 9
    tau = torch.full((rows,), 2.0, device=DEVICE)
    for ka in (0, 1, 2):
        loss, grad = triton_kd.launch_kd_loss(
            student, teacher, target, tau, ka, 0.9, True, 0.5, -100, True, config=cfg
        )
        single, single_grad = triton_kd.launch_kd_loss(
            student, teacher, target, tau, ka, 0.9, True, 0.5, -100, True
        )
        assert torch.isnan(loss[4:]).all() and torch.isnan(grad[4:]).all()
        good = slice(0, 4)
        ref_loss, ref_grad = reference_rows(
            student[good], teacher[good], target[good], tau[good], ka, 0.9, True, 0.5, -100, torch.float64
        )
        torch.testing.assert_close(loss[good].double(), ref_loss, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad[good].double(), ref_grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss[good], single[good], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad[good], single_grad[good], rtol=1e-5, atol=1e-5)


def test_student_minus_inf_under_teacher_mass_in_a_later_chunk_is_infinite():
    cfg = row_block_config(24, max_block_c=8)
    student, teacher = logits(2, 24), logits(2, 24)
    student[0, 19] = float("-inf")
    tau = torch.full((2,), 1.5, device=DEVICE)
    loss, _ = triton_kd.launch_kd_loss(student, teacher, None, tau, 0, 0.9, True, 0.0, -100, True, config=cfg)
    assert loss[0].item() == float("inf") and torch.isfinite(loss[1])


def test_row_strided_inputs_run_without_a_copy():
    wide_s, wide_t = logits(5, 60), logits(5, 60)
    student, teacher = wide_s[:, 7:40], wide_t[:, 7:40]
    assert not student.is_contiguous()
    assert with_unit_class_stride(student) is student
    assert with_unit_class_stride(student.t().contiguous().t()) is not student
    target = labels(teacher)
    tau = torch.full((5,), 2.0, device=DEVICE)
    for cfg in (row_block_config(33), row_block_config(33, max_block_c=8)):
        check_launch(student, teacher, target, tau, 1, cfg)


def test_cpu_tensors_outside_the_interpreter_are_refused(monkeypatch):
    if DEVICE != "cpu":
        pytest.skip("the interpreter runs here only without a GPU")
    monkeypatch.setattr(triton_kd, "INTERPRETED", False)
    student, teacher = logits(5, 11), logits(5, 11)
    tau = torch.full((5,), 2.0)
    with pytest.raises(ValueError, match="CPU tensors run only in the Triton interpreter"):
        torch.ops.tskd_fast.kd_loss_triton(student, teacher, None, tau, 0, 0.9, True, 0.0, -100, False)


# ---------------------------------------------------------------------------------------------
# Compilation for a real GPU, without one

_AOT_BODY = """
from tskd_fast.ops.triton import kd_loss as K
from tskd_fast.ops.triton._config import row_block_config

def kd_signature(dtype):
    s = {"z_ptr": "*" + dtype, "v_ptr": "*" + dtype, "y_ptr": "*i64", "tau_ptr": "*fp32",
         "params_ptr": "*fp32", "loss_ptr": "*fp32", "grad_ptr": "*" + dtype, "flag_ptr": "*i32"}
    s.update({k: "i32" for k in ("n_rows", "n_cols", "z_row_stride", "v_row_stride",
                                 "grad_row_stride", "ignore_index")})
    s.update({k: "fp32" for k in ("lsr_on_arg", "lsr_off_arg", "lsr_neg_entropy_arg",
                                  "ce_weight_arg", "grad_scale_arg")})
    return s

for classes, dtype in ((100, "fp32"), (1000, "bf16"), (4096, "fp16"), (32000, "fp32")):
    cfg = row_block_config(classes)
    for ka in (0, 1, 2):
        has_target = ka != 0 or classes == 100
        c = dict(KA=ka, SCALE_TAU2=True, HAS_TARGET=has_target, HAS_CE=has_target,
                 WRITE_GRAD=classes != 1000, PARAMS_IN_MEMORY=False, ACC=tl.float32,
                 ROWS=cfg.rows, BLOCK_C=cfg.block_c, SINGLE_CHUNK=cfg.single_chunk)
        build(K._kd_loss_kernel, kd_signature(dtype), c, cfg.num_warps, f"kd_loss C={classes} {dtype} ka={ka}")
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_spills():
    compile_for_sm90_without_spills(_AOT_BODY, variants=12)
