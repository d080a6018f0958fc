"""Every fused kd_loss backend against the PyTorch reference: values and gradients, all options;
then each backend's kernel rows at the shapes that exercise the Triton kernel's launch paths (the
multi-row tile, the chunked online path forced on short rows), and what only the Triton kernel
has: its launch-shape choice, the error flag it writes, CPU tensors refused outside the
interpreter, and every variant compiled for a real GPU (sm_90) without register spills. Without a
GPU the Triton kernels run in the interpreter (tests/conftest.py sets TRITON_INTERPRET)."""

import itertools

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.row_inputs import labels, logits, opmath, row_sample
from tests.tolerance import assert_close_to_truth
from tests.triton_aot import compile_for_sm90_without_spills
from tskd_fast import functional as F
from tskd_fast import reference
from tskd_fast.ops import op_for
from tskd_fast.ops.common import with_unit_class_stride
from tskd_fast.ops.triton._config import MAX_BLOCK_C, row_block_config

BACKENDS = kernel_backends()
TRITON = [b for b in BACKENDS if b == "triton"]
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no fused backend built")

if TRITON:
    from tskd_fast.ops.triton import _launch
    from tskd_fast.ops.triton import kd_loss as triton_kd


def make_inputs(rows, classes, dtype, device, spread=3.0, ignore_every=5):
    student = (torch.randn(rows, classes, dtype=torch.float64) * spread).to(device=device, dtype=dtype)
    teacher = (torch.randn(rows, classes, dtype=torch.float64) * spread).to(device=device, dtype=dtype)
    target = torch.randint(0, classes, (rows,), device=device)
    if rows > 2:
        target[::ignore_every] = -100
        # Make some rows correctly predicted by the teacher so both KA branches run.
        right = torch.arange(1, rows, 3, device=device)
        target[right] = teacher[right].float().argmax(dim=1)
    return student, teacher, target


def run(backend, student, teacher, target, upstream=None, **kwargs):
    """(loss, d loss / d student) with backend; upstream weights the rows when reduction='none'."""
    z = student.detach().clone().requires_grad_(True)
    loss = F.kd_loss(z, teacher, target, backend=backend, **kwargs)
    if upstream is None and loss.dim() > 0:
        upstream = torch.ones_like(loss)
    total = (loss * upstream).sum() if upstream is not None else loss
    (grad,) = torch.autograd.grad(total, z)
    return loss.detach(), grad


def check_against_reference(backend, student, teacher, target, upstream=None, **kwargs):
    dtype = student.dtype
    loss, grad = run(backend, student, teacher, target, upstream, **kwargs)
    loss_ref, grad_ref = run("reference", student, teacher, target, upstream, **kwargs)
    truth_kwargs = dict(kwargs)
    if isinstance(truth_kwargs.get("temperature"), torch.Tensor):
        truth_kwargs["temperature"] = truth_kwargs["temperature"].double()
    up64 = upstream.double() if upstream is not None else None
    loss_64, grad_64 = run("reference", student.double(), teacher.double(), target, up64, **truth_kwargs)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_close_to_truth(loss, loss_ref, loss_64, dtype, f"{backend} loss")
    assert_close_to_truth(grad, grad_ref, grad_64, dtype, f"{backend} grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "ka,ce_weight,scale,tensor_tau",
    list(itertools.product(["none", "ps", "lsr"], [0.0, 0.5], ["tau2", "none"], [False, True])),
)
def test_options_match_reference(backend, ka, ce_weight, scale, tensor_tau):
    device = device_of(backend)
    student, teacher, target = make_inputs(11, 37, torch.float32, device)
    temperature = torch.rand(11, device=device) * 4 + 0.5 if tensor_tau else 2.5
    upstream = torch.rand(11, device=device, dtype=torch.float64).float() + 0.5
    check_against_reference(
        backend,
        student,
        teacher,
        target,
        upstream,
        temperature=temperature,
        ka=ka,
        ce_weight=ce_weight,
        scale=scale,
        reduction="none",
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
def test_reductions(backend, reduction):
    device = device_of(backend)
    student, teacher, target = make_inputs(9, 21, torch.float32, device)
    upstream = torch.rand(9, device=device) + 0.5 if reduction == "none" else None
    check_against_reference(
        backend,
        student,
        teacher,
        target,
        upstream,
        temperature=3.0,
        ka="ps",
        ce_weight=0.3,
        reduction=reduction,
    )


SHAPES = [(1, 1), (3, 2), (7, 17), (13, 100), (5, 1000), (2, 4099)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rows,classes", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_shapes_and_dtypes(backend, rows, classes, dtype):
    device = device_of(backend)
    if dtype == torch.float64 and device != "cpu":
        pytest.skip("float64 runs on the CPU only")
    student, teacher, target = make_inputs(rows, classes, dtype, device)
    for ka in ("ps", "lsr"):
        check_against_reference(
            backend, student, teacher, target, temperature=4.0, ka=ka, ce_weight=0.25, reduction="batchmean"
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_rows(backend):
    device = device_of(backend)
    rows = 2 if backend == "triton" and device == "cpu" else 6
    student, teacher, target = make_inputs(rows, 32000, torch.float32, device)
    check_against_reference(backend, student, teacher, target, temperature=2.0, ka="ps", ce_weight=0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_temperature_one_shares_ce_exponentials(backend):
    # At tau == 1 the CPU kernel reuses the KD exponentials for the CE term.
    device = device_of(backend)
    student, teacher, target = make_inputs(8, 50, torch.float32, device)
    temperature = torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0, 3.0, 1.0, 1.0], device=device)
    check_against_reference(
        backend, student, teacher, target, temperature=temperature, ka="lsr", ce_weight=1.0, reduction="none"
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    device = device_of(backend)
    wide_s, wide_t, target = make_inputs(6, 80, torch.float32, device)
    # Row-strided views (a slice of the classes) and column-strided views (a transpose).
    student, teacher = wide_s[:, 5:45], wide_t[:, 5:45]
    target = target.clamp(max=39)
    assert not student.is_contiguous()
    check_against_reference(backend, student, teacher, target, temperature=2.0, ka="ps", ce_weight=0.5)
    student_t = wide_s[:, :6].t().contiguous().t()
    teacher_t = wide_t[:, :6].t().contiguous().t()
    assert student_t.stride(1) != 1
    check_against_reference(backend, student_t, teacher_t, target.clamp(max=5), temperature=2.0, ka="lsr")


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_batch(backend):
    device = device_of(backend)
    rows = 3000 if device_of(backend) == "cpu" and backend == "triton" else 70000
    student, teacher, target = make_inputs(rows, 3, torch.float32, device)
    check_against_reference(backend, student, teacher, target, temperature=4.0, ka="ps", ce_weight=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_class_gives_zero_loss(backend):
    device = device_of(backend)
    student, teacher, target = make_inputs(4, 1, torch.float32, device)
    loss, grad = run(backend, student, teacher, target, temperature=2.0, ka="lsr")
    assert loss.item() == 0.0
    assert torch.all(grad == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_logits_are_stable(backend):
    device = device_of(backend)
    student, teacher, target = make_inputs(5, 64, torch.float32, device, spread=300.0)
    check_against_reference(backend, student, teacher, target, temperature=1.5, ka="ps", ce_weight=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_teacher_masked_classes(backend):
    """-inf teacher logits are classes without target mass: they contribute nothing."""
    device = device_of(backend)
    student, teacher, target = make_inputs(6, 40, torch.float32, device)
    teacher = teacher.clone()
    teacher[:, 7] = float("-inf")
    teacher[2, 30:] = float("-inf")
    student = student.clone()
    student[3, 7] = float("-inf")  # masked for both: still 0
    target = target.clone()
    target[target == 7] = 0
    check_against_reference(backend, student, teacher, target, temperature=2.0, reduction="none")
    loss, grad = run(backend, student, teacher, None, temperature=2.0, reduction="none")
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_student_minus_inf_where_teacher_has_mass_is_infinite(backend):
    device = device_of(backend)
    student, teacher, _ = make_inputs(3, 10, torch.float32, device)
    student = student.clone()
    student[1, 4] = float("-inf")
    loss, _ = run(backend, student, teacher, None, temperature=2.0, reduction="none")
    assert loss[1].item() == float("inf")
    assert torch.isfinite(loss[[0, 2]]).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_rows_give_nan_and_leave_other_rows_alone(backend, bad):
    device = device_of(backend)
    student, teacher, target = make_inputs(5, 33, torch.float32, device)
    student, teacher = student.clone(), teacher.clone()
    student[1, 3] = bad
    teacher[3, 0] = bad
    loss, grad = run(backend, student, teacher, target, temperature=2.0, ka="ps", reduction="none")
    ok = [0, 2, 4]
    assert torch.isnan(loss[1]) and torch.isnan(loss[3])
    assert torch.isnan(grad[1]).all() and torch.isnan(grad[3]).all()
    clean_loss, clean_grad = run(
        "reference", student[ok], teacher[ok], target[ok], temperature=2.0, ka="ps", reduction="none"
    )
    torch.testing.assert_close(loss[ok], clean_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad[ok], clean_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_call_returns_the_same_loss(backend):
    device = device_of(backend)
    student, teacher, target = make_inputs(7, 19, torch.float32, device)
    with torch.no_grad():
        plain = F.kd_loss(student, teacher, target, ka="lsr", ce_weight=0.5, backend=backend)
    with_grad, _ = run(backend, student, teacher, target, ka="lsr", ce_weight=0.5)
    torch.testing.assert_close(plain, with_grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_twice_with_retained_graph(backend):
    device = device_of(backend)
    student, teacher, target = make_inputs(6, 12, torch.float32, device)
    z = student.clone().requires_grad_(True)
    loss = F.kd_loss(z, teacher, target, ka="ps", backend=backend)
    loss.backward(retain_graph=True)
    first = z.grad.clone()
    loss.backward()
    torch.testing.assert_close(z.grad, 2 * first)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_of_scaled_and_summed_losses(backend):
    # loss.backward() on a batchmean loss hands the kernel's gradient on untouched; any other
    # incoming gradient (a weight, a second loss on the same logits) must still be applied.
    device = device_of(backend)
    student, teacher, target = make_inputs(7, 23, torch.float32, device)
    other = torch.randn_like(teacher)

    def grads(b):
        z = student.clone().requires_grad_(True)
        first = F.kd_loss(z, teacher, target, ka="ps", ce_weight=0.5, backend=b)
        second = F.kd_loss(z, other, temperature=2.0, reduction="sum", backend=b)
        (3.0 * first + second).backward()
        only = student.clone().requires_grad_(True)
        F.kd_loss(only, teacher, target, ka="ps", ce_weight=0.5, backend=b).backward()
        return z.grad, only.grad

    combined, single = grads(backend)
    combined_ref, single_ref = grads("reference")
    torch.testing.assert_close(combined, combined_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(single, single_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_student_minus_inf_where_the_adjusted_target_has_mass(backend):
    """KA moves target mass onto the label and the teacher's argmax: a student -inf there is an
    infinite loss (and a finite gradient), as in the reference."""
    device = device_of(backend)
    student, teacher, _ = make_inputs(4, 12, torch.float32, device)
    teacher = teacher.clone()
    teacher[:, 3] = 20.0  # the teacher's argmax on every row
    target = torch.tensor([5, 6, 7, 3], device=device)  # rows 0-2 are wrong, row 3 right
    student = student.clone()
    student[0, 3] = float("-inf")  # at the argmax, which the swap gives exp(a_label) > 0
    student[1, 6] = float("-inf")  # at the label
    for ka, lsr_p in (("ps", 0.9), ("lsr", 0.9), ("lsr", 1.0)):
        loss, grad = run(
            backend, student, teacher, target, temperature=2.0, ka=ka, lsr_p=lsr_p, reduction="none"
        )
        ref, ref_grad = run(
            "reference", student, teacher, target, temperature=2.0, ka=ka, lsr_p=lsr_p, reduction="none"
        )
        assert torch.equal(torch.isinf(loss), torch.isinf(ref)), (ka, loss, ref)
        finite = torch.isfinite(ref)
        torch.testing.assert_close(loss[finite], ref[finite], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_teacher_exponential_underflow_counts_as_no_mass(backend):
    """A teacher class whose exponential underflows to 0 carries no target mass, also where the
    student is -inf (0 log 0 = 0), as in the reference."""
    device = device_of(backend)
    student, teacher, _ = make_inputs(3, 9, torch.float32, device)
    teacher, student = teacher.clone(), student.clone()
    teacher[1, 4] = -1e4  # exp((v - max v) / tau) underflows to exactly 0
    student[1, 4] = float("-inf")
    loss, grad = run(backend, student, teacher, None, temperature=1.0, reduction="none")
    ref, ref_grad = run("reference", student, teacher, None, temperature=1.0, reduction="none")
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The kernel rows of each backend at the Triton kernel's launch paths

KA_NAMES = ("none", "ps", "lsr")


def kernel_rows(
    backend, student, teacher, target, tau, ka, lsr_p=0.9, scale_tau2=True, ce_weight=0.5, config=None
):
    """(row_loss, row_grad) of `backend`'s kernel: the op with reduction none and grad_scale 1, or
    for Triton with a `config` the kernel launched with that launch shape (on checked inputs)."""
    args = (student, teacher, target, tau, ka, lsr_p, scale_tau2, ce_weight, -100, True)
    if config is not None and backend == "triton":
        return triton_kd.launch_kd_loss(*args, config=config)
    return op_for(backend, "kd_loss")(*args)


def skip_float64_off_the_cpu(backend, dtype):
    if dtype == torch.float64 and backend == "cuda":
        pytest.skip("float64 runs on the CPU only")


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


def check_rows(backend, student, teacher, target, tau, ka, config, lsr_p=0.9, scale_tau2=True, ce_weight=0.5):
    """The kernel rows (under `config` for Triton) against the reference (same precision and
    float64 truth)."""
    dtype = student.dtype
    loss, grad = kernel_rows(backend, student, teacher, target, tau, ka, lsr_p, scale_tau2, ce_weight, config)
    assert loss.dtype == opmath(dtype) and grad.dtype == dtype and grad.shape == student.shape
    args = (student, teacher, target, tau, ka, lsr_p, scale_tau2, ce_weight, -100)
    loss_ref, grad_ref = reference_rows(*args, opmath(dtype))
    loss_64, grad_64 = reference_rows(*args, torch.float64)
    assert_close_to_truth(loss, loss_ref, loss_64, dtype, f"{backend} row_loss")
    assert_close_to_truth(grad, grad_ref.to(dtype), grad_64, dtype, f"{backend} row_grad")


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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ka", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_multi_row_tile_with_partial_last_program(backend, ka, dtype):
    skip_float64_off_the_cpu(backend, dtype)
    device = device_of(backend)
    rows, classes = 21, 37
    cfg = row_block_config(classes)
    assert cfg.single_chunk and cfg.rows > 1 and rows % cfg.rows != 0
    student, teacher = logits(rows, classes, device, dtype), logits(rows, classes, device, dtype)
    target = labels(teacher)
    tau = torch.rand(rows, device=device, dtype=opmath(dtype)) * 3 + 0.5
    check_rows(backend, student, teacher, target, tau, ka, cfg)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ka", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("classes", [37, 40])
def test_chunked_path_on_short_rows(backend, ka, dtype, classes):
    """Chunks of 8 columns (Triton): the online maxima move between chunks, the last chunk is
    partial (37) or full (40)."""
    skip_float64_off_the_cpu(backend, dtype)
    device = device_of(backend)
    rows = 6
    cfg = row_block_config(classes, max_block_c=8)
    assert not cfg.single_chunk
    student, teacher = logits(rows, classes, device, dtype), logits(rows, classes, device, dtype)
    # Rising maxima: the row maximum sits in the last chunk, so every chunk rescales the sums.
    ramp = torch.linspace(0, 6, classes, device=device).to(dtype)
    student, teacher = student + ramp, teacher + ramp.flip(0)
    target = labels(teacher)
    tau = torch.rand(rows, device=device, dtype=opmath(dtype)) * 3 + 0.5
    check_rows(backend, student, teacher, target, tau, ka, cfg)
    check_rows(backend, student, teacher, target, tau, ka, cfg, scale_tau2=False, ce_weight=0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunked_path_with_masked_chunks_ties_and_bad_rows(backend):
    device = device_of(backend)
    rows, classes = 6, 30
    cfg = row_block_config(classes, max_block_c=8)
    student, teacher = logits(rows, classes, device), logits(rows, classes, device)
    teacher[0, :16] = float("-inf")  # the first two chunks carry no target mass
    student[1, :8] = float("-inf")  # a masked student chunk where the teacher is masked too
    teacher[1, :8] = float("-inf")
    teacher[2, [3, 12, 25]] = 50.0  # a tie across chunks: argmax is the first index, 3
    student[4, 20] = float("nan")  # a bad row found in a later chunk
    student[5, :] = float("-inf")  # a row of only -inf
    target = labels(teacher)
    target[2] = 9  # wrong, so ps swaps columns 3 and 9
    tau = torch.full((rows,), 2.0, device=device)
    for ka in (0, 1, 2):
        loss, grad = kernel_rows(backend, student, teacher, target, tau, ka, config=cfg)
        single, single_grad = kernel_rows(backend, student, teacher, target, tau, ka)
        assert torch.isnan(loss[4:]).all() and torch.isnan(grad[4:]).all()
        good = slice(0, 4)
        ref_loss, ref_grad = reference_rows(
            student[good], teacher[good], target[good], tau[good], ka, 0.9, True, 0.5, -100, torch.float64
        )
        torch.testing.assert_close(loss[good].double(), ref_loss, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad[good].double(), ref_grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss[good], single[good], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad[good], single_grad[good], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_student_minus_inf_under_teacher_mass_in_a_later_chunk_is_infinite(backend):
    device = device_of(backend)
    cfg = row_block_config(24, max_block_c=8)
    student, teacher = logits(2, 24, device), logits(2, 24, device)
    student[0, 19] = float("-inf")
    tau = torch.full((2,), 1.5, device=device)
    loss, _ = kernel_rows(backend, student, teacher, None, tau, 0, ce_weight=0.0, config=cfg)
    assert loss[0].item() == float("inf") and torch.isfinite(loss[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_strided_inputs_run_without_a_copy(backend):
    device = device_of(backend)
    wide_s, wide_t = logits(5, 60, device), logits(5, 60, device)
    student, teacher = wide_s[:, 7:40], wide_t[:, 7:40]
    assert not student.is_contiguous()
    assert with_unit_class_stride(student) is student
    assert with_unit_class_stride(student.t().contiguous().t()) is not student
    target = labels(teacher)
    tau = torch.full((5,), 2.0, device=device)
    for cfg in (row_block_config(33), row_block_config(33, max_block_c=8)):
        check_rows(backend, student, teacher, target, tau, 1, cfg)


# ---------------------------------------------------------------------------------------------
# Only the Triton kernel: the error flag, CPU tensors outside the interpreter, sm_90 builds


def kd_flag(student, teacher, target, tau, ka=1):
    flag = _launch.value_flag(student.device)
    triton_kd.launch_kd_loss(student, teacher, target, tau, ka, 0.9, True, 0.5, -100, True, flag=flag)
    return int(flag[0])


@pytest.mark.parametrize("backend", TRITON)
@pytest.mark.parametrize("ka", [0, 1, 2])
def test_kernel_clears_the_flag_on_a_bad_label_or_temperature(backend, ka):
    student, teacher, target, tau = row_sample(device_of(backend))
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


@pytest.mark.parametrize("backend", TRITON)
def test_kernel_flags_a_bad_row_in_any_program(backend):
    """Rows of several programs (a multi-row tile and one row per program): the last row counts."""
    for classes in (9, 3000):
        student, teacher, target, tau = row_sample(device_of(backend), rows=70, classes=classes)
        target[69] = classes
        assert kd_flag(student, teacher, target, tau) == 0


@pytest.mark.parametrize("backend", TRITON)
def test_cpu_tensors_outside_the_interpreter_are_refused(backend, monkeypatch):
    if device_of(backend) != "cpu":
        pytest.skip("the interpreter runs here only without a GPU")
    monkeypatch.setattr(triton_kd, "INTERPRETED", False)
    student, teacher = logits(5, 11, "cpu"), logits(5, 11, "cpu")
    tau = torch.full((5,), 2.0)
    with pytest.raises(ValueError, match="CPU tensors run only in the Triton interpreter"):
        torch.ops.tskd_fast.kd_loss_triton(student, teacher, None, tau, 0, 0.9, True, 0.0, -100, False)


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
@pytest.mark.parametrize("backend", TRITON)
def test_kernels_compile_for_sm90_without_spills(backend):
    compile_for_sm90_without_spills(_AOT_BODY, variants=12)
