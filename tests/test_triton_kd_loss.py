"""Triton-specific tests of tskd_fast::kd_loss_triton and tskd_fast::dtd_weight_triton.

The backend-generic checks live in test_kd_loss_kernels.py; these cover what only the Triton
kernels have: the launch-shape choice, the multi-row tile and the chunked (online) long-row path
forced on small inputs, opcheck and torch.compile of the Triton ops, dtd_weight against the
reference, the input checks, and that every kernel variant compiles for a real GPU (sm_90).
Without a GPU the kernels run in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tskd_fast import functional as F
from tskd_fast import reference

pytestmark = pytest.mark.skipif("triton" not in kernel_backends(), reason="triton cannot run here")

if "triton" in kernel_backends():
    from tskd_fast.ops.triton import _checks
    from tskd_fast.ops.triton import dtd_weight as triton_dtd
    from tskd_fast.ops.triton import kd_loss as triton_kd
    from tskd_fast.ops.triton._config import MAX_BLOCK_C, row_block_config

DEVICE = device_of("triton")
KA_NAMES = ("none", "ps", "lsr")
REPO = Path(__file__).resolve().parents[1]


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
    assert _checks.with_unit_class_stride(student) is student
    assert _checks.with_unit_class_stride(student.t().contiguous().t()) is not student
    target = labels(teacher)
    tau = torch.full((5,), 2.0, device=DEVICE)
    for cfg in (row_block_config(33), row_block_config(33, max_block_c=8)):
        check_launch(student, teacher, target, tau, 1, cfg)


def test_without_target_and_without_gradient():
    student, teacher = logits(9, 50), logits(9, 50)
    tau = torch.full((9,), 3.0, device=DEVICE)
    args = (student, teacher, None, tau, 0, 0.9, True, 0.0, -100)
    loss, grad = torch.ops.tskd_fast.kd_loss_triton(*args, False)
    assert grad.shape == (0,) and grad.dtype == student.dtype
    ref_loss, _ = reference_rows(*args, torch.float64)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    with_grad, _ = torch.ops.tskd_fast.kd_loss_triton(*args, True)
    torch.testing.assert_close(loss, with_grad)


# ---------------------------------------------------------------------------------------------
# The ops as PyTorch ops


def sample(rows=5, classes=11, dtype=torch.float32):
    student, teacher = logits(rows, classes, dtype, 2.0), logits(rows, classes, dtype, 2.0)
    target = torch.randint(0, classes, (rows,), device=DEVICE)
    target[0] = -100
    temperature = torch.rand(rows, device=DEVICE, dtype=opmath(dtype)) * 3 + 0.5
    return student, teacher, target, temperature


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ka,ce_weight", [(1, 0.5), (2, 1.0)])
def test_opcheck_kd_loss_triton(dtype, ka, ce_weight):
    student, teacher, target, temperature = sample(dtype=dtype)
    student.requires_grad_(True)
    args = (student, teacher, target, temperature, ka, 0.9, True, ce_weight, -100, True)
    torch.library.opcheck(torch.ops.tskd_fast.kd_loss_triton.default, args)
    no_target = (student.detach(), teacher, None, temperature, 0, 0.9, False, 0.0, -100, False)
    torch.library.opcheck(torch.ops.tskd_fast.kd_loss_triton.default, no_target)


@pytest.mark.parametrize("mode,ka", [(0, 0), (0, 1), (1, 0)])
def test_opcheck_dtd_weight_triton(mode, ka):
    student, teacher, target, _ = sample()
    args = (student, teacher, target, mode, 2.0, ka, -100)
    torch.library.opcheck(
        torch.ops.tskd_fast.dtd_weight_triton.default, args, test_utils=("test_schema", "test_faketensor")
    )


def test_gradcheck_float64():
    if DEVICE != "cpu":
        pytest.skip("float64 runs on the CPU only")
    student, teacher, target, temperature = sample(4, 9, torch.float64)
    student.requires_grad_(True)

    def loss(z):
        return F.kd_loss(
            z, teacher, target, temperature, ka="ps", ce_weight=0.7, reduction="none", backend="triton"
        )

    assert torch.autograd.gradcheck(loss, (student,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_torch_compile_fullgraph_matches_eager():
    student, teacher, target, _ = sample(16, 37)

    def step(z, v, y):
        tau = F.dtd_temperature(z, v, t0=3.0, target=y, ka="ps", backend="triton")
        return F.kd_loss(z, v, y, tau, ka="ps", ce_weight=0.5, backend="triton")

    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    z1 = student.clone().requires_grad_(True)
    z2 = student.clone().requires_grad_(True)
    eager = step(z1, teacher, target)
    eager.backward()
    traced = compiled(z2, teacher, target)
    traced.backward()
    torch.testing.assert_close(traced, eager)
    torch.testing.assert_close(z2.grad, z1.grad)


# ---------------------------------------------------------------------------------------------
# dtd_weight


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


# ---------------------------------------------------------------------------------------------
# Input checks (messages as the C++ ops', csrc/checks.cpp)


def test_kd_loss_input_errors():
    op = torch.ops.tskd_fast.kd_loss_triton.default
    student, teacher, target, tau = sample()

    def call(s=student, v=teacher, y=target, t=tau, ka=1, lsr_p=0.9, ce=0.5, ignore=-100):
        return op(s, v, y, t, ka, lsr_p, True, ce, ignore, True)

    with pytest.raises(RuntimeError, match=r"tskd_fast::kd_loss_triton: student_logits must be 2-D"):
        call(s=student[0], v=teacher[0])
    with pytest.raises(RuntimeError, match=r"teacher_logits must have the shape of student_logits \[5, 11\]"):
        call(v=teacher[:, :5])
    with pytest.raises(RuntimeError, match="empty batch"):
        call(s=student[:0], v=teacher[:0], y=target[:0], t=tau[:0])
    with pytest.raises(RuntimeError, match="has 0 classes"):
        call(s=student[:, :0], v=teacher[:, :0])
    with pytest.raises(RuntimeError, match="must be float32, float16, bfloat16 or float64, got Long"):
        call(s=student.long(), v=teacher.long())
    with pytest.raises(RuntimeError, match=r"teacher_logits must have the dtype of student_logits \(Float\)"):
        call(v=teacher.half())
    with pytest.raises(RuntimeError, match=r"target must have shape \(batch,\) = \(5\), got \[4\]"):
        call(y=target[:4])
    with pytest.raises(RuntimeError, match="target must be int64, got Int"):
        call(y=target.int())
    with pytest.raises(RuntimeError, match="ka must be 0 \\(none\\), 1 \\(ps\\) or 2 \\(lsr\\), got 3"):
        call(ka=3)
    with pytest.raises(RuntimeError, match="knowledge adjustment \\(ka\\) needs target labels"):
        call(y=None, ce=0.0)
    with pytest.raises(RuntimeError, match="ce_weight != 0 needs target labels"):
        call(y=None, ka=0)
    with pytest.raises(RuntimeError, match=r"lsr_p must be in \(0, 1\], got 1.5"):
        call(lsr_p=1.5)
    with pytest.raises(RuntimeError, match="ce_weight must be finite"):
        call(ce=float("inf"))
    with pytest.raises(RuntimeError, match=r"temperature must have shape \(batch,\) = \(5\), got \[1\]"):
        call(t=tau[:1])
    with pytest.raises(RuntimeError, match="temperature must be Float for Float logits, got Double"):
        call(t=tau.double())
    if DEVICE != "cpu":
        with pytest.raises(RuntimeError, match="float64 logits are supported on the CPU only"):
            call(s=student.double(), v=teacher.double(), t=tau.double())
    # ignore_index itself is always a valid label
    call(y=torch.full_like(target, 7), ignore=7)
    if DEVICE != "cpu":
        # On CUDA bad values fail a device assert, which loses the CUDA context (as the CUDA C++
        # kernels' asserts do): test_gpu_readiness checks that in a subprocess.
        return
    bad_target = target.clone()
    bad_target[3] = 11
    with pytest.raises(RuntimeError, match=r"target\[3\] = 11 is out of range: labels must be in \[0, 11\)"):
        call(y=bad_target)
    bad_tau = tau.clone()
    bad_tau[2] = -1.0
    with pytest.raises(RuntimeError, match=r"temperature\[2\] = -1 must be finite and > 0"):
        call(t=bad_tau)
    bad_tau[2] = float("nan")
    with pytest.raises(RuntimeError, match=r"temperature\[2\] = nan must be finite and > 0"):
        call(t=bad_tau)


def test_dtd_weight_input_errors():
    op = torch.ops.tskd_fast.dtd_weight_triton.default
    student, teacher, target, _ = sample()
    with pytest.raises(RuntimeError, match="tskd_fast::dtd_weight_triton: mode must be 0 \\(flsw\\) or 1"):
        op(student, teacher, target, 2, 2.0, 0, -100)
    with pytest.raises(RuntimeError, match="gamma must be finite and >= 0, got -1"):
        op(student, teacher, target, 0, -1.0, 0, -100)
    with pytest.raises(RuntimeError, match="ka must be 0"):
        op(student, teacher, target, 0, 2.0, 5, -100)
    with pytest.raises(RuntimeError, match="needs target labels"):
        op(student, teacher, None, 0, 2.0, 1, -100)
    with pytest.raises(RuntimeError, match="teacher_logits must have the shape"):
        op(student, teacher[:2], target, 0, 2.0, 0, -100)
    if DEVICE != "cpu":
        return  # a device assert on CUDA (see test_kd_loss_input_errors)
    bad_target = target.clone()
    bad_target[1] = -3
    with pytest.raises(RuntimeError, match=r"target\[1\] = -3 is out of range"):
        op(student, teacher, bad_target, 0, 2.0, 1, -100)
    # Labels are only read (and checked) when ka is on, as in the C++ op.
    op(student, teacher, bad_target, 0, 2.0, 0, -100)


def test_cpu_tensors_outside_the_interpreter_are_refused(monkeypatch):
    if DEVICE != "cpu":
        pytest.skip("the interpreter runs here only without a GPU")
    monkeypatch.setattr(triton_kd, "INTERPRETED", False)
    monkeypatch.setattr(triton_dtd, "INTERPRETED", False)
    student, teacher, target, tau = sample()
    with pytest.raises(RuntimeError, match="CPU tensors run only in the Triton interpreter"):
        torch.ops.tskd_fast.kd_loss_triton(student, teacher, target, tau, 0, 0.9, True, 0.0, -100, False)
    with pytest.raises(RuntimeError, match="CPU tensors run only in the Triton interpreter"):
        torch.ops.tskd_fast.dtd_weight_triton(student, teacher, target, 1, 2.0, 0, -100)


# ---------------------------------------------------------------------------------------------
# Compilation for a real GPU, without one: the interpreter does not catch everything the
# compiler rejects (non-constexpr globals, loop-carried type changes), nor register spills.

_AOT_SCRIPT = textwrap.dedent(
    """
    import json, subprocess, sys, tempfile
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from tskd_fast.ops.triton import dtd_weight as D, kd_loss as K
    from tskd_fast.ops.triton._config import row_block_config

    target = GPUTarget("cuda", 90, 32)
    cuobjdump = triton.__path__[0] + "/backends/nvidia/bin/cuobjdump"
    results = []

    def build(fn, signature, constexprs, cfg, what):
        kernel = triton.compile(
            ASTSource(fn=fn, signature=signature, constexprs=constexprs),
            target=target,
            options={"num_warps": cfg.num_warps},
        )
        usage = ""
        try:
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(kernel.asm["cubin"])
                f.flush()
                usage = subprocess.run(
                    [cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True
                ).stdout
        except OSError:
            pass
        results.append({"what": what, "usage": usage})

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
            build(K._kd_loss_kernel, kd_signature(dtype), c, cfg, f"kd_loss C={classes} {dtype} ka={ka}")
    dtd_sig = {"z_ptr": "*bf16", "v_ptr": "*bf16", "y_ptr": "*i64", "params_ptr": "*fp32",
               "w_ptr": "*fp32", "flag_ptr": "*i32", "n_rows": "i32", "n_cols": "i32", "z_row_stride": "i32",
               "v_row_stride": "i32", "ignore_index": "i32", "gamma_arg": "fp32"}
    for classes in (100, 32000):
        cfg = row_block_config(classes)
        for mode, swap in ((0, False), (0, True), (1, False)):
            c = dict(MODE=mode, CHECK_LABELS=swap, SWAP=swap, PARAMS_IN_MEMORY=False, ACC=tl.float32, ROWS=cfg.rows,
                     BLOCK_C=cfg.block_c)
            build(D._dtd_weight_kernel, dtd_sig, c, cfg, f"dtd_weight C={classes} mode={mode} swap={swap}")
    print(json.dumps(results))
    """
)


def _nvidia_backend_present() -> bool:
    import triton

    return (Path(triton.__path__[0]) / "backends" / "nvidia" / "bin" / "ptxas").exists()


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_spills():
    if not _nvidia_backend_present():
        pytest.skip("triton's NVIDIA backend (ptxas) is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _AOT_SCRIPT], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 18
    for result in results:
        usage = result["usage"]
        if "REG:" in usage:  # cuobjdump ran: no spills to local memory
            assert "STACK:0 " in usage and "LOCAL:0 " in usage, f"{result['what']}: {usage.strip()}"
