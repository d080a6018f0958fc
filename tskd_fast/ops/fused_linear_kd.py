"""The fused linear + KD loss as ops: the row op of each backend and the chunked driver op.

Row op (the kernel between the matmuls; contract in csrc/include/tskd_fast/fused_linear_kd_math.h):
    fused_linear_kd_rows(student (R, V) mutated, teacher (R, V) | None, topk_ids (R, K) | None,
        topk_logprobs (R, K) | None, target (R,) | None, temperature (R,), divergence: int,
        beta: float, ka: int, lsr_p: float, scale_tau2: bool, ce_weight: float, ignore_index: int,
        compute_grad: bool, grad_scale: float = 1) -> row_loss (R,) opmath
    and, when compute_grad, grad_scale * d row_loss / d student written over `student`.
    tskd_fast::fused_linear_kd_rows is the C++ op (CPU; CUDA when a CUDA kernel is registered for
    it); tskd_fast::fused_linear_kd_rows_triton, when present, is the Triton one: the module
    tskd_fast.ops.triton.fused_linear_kd defines it on import with the same schema, exports it as
    `fused_linear_kd_rows_triton` and gives it this module's fake kernel
    (register_fused_linear_kd_rows_op). rows_backend() finds whichever is built, and the driver
    and the tests (tests/test_fused_linear_kd_rows.py: row_backends) pick it up from there.

Driver op tskd_fast::fused_linear_kd: a custom op written in Python that runs the chunk loop of
tskd_fast.ops.fused_linear_kd_chunks with the row op of a backend, so the forward returns the loss
and holds dX, dW and db, and the backward only scales them by the incoming gradient (the reduction
"none" excepted: per-row upstream weights cannot be folded into a dW summed over rows, so its
backward runs the chunks again through tskd_fast::fused_linear_kd_backward).

The driver is Python rather than C++: its cost is the matmuls (milliseconds per chunk), beside
which a Python loop over tens of chunks is nothing; the one driver calls the C++ row op on the CPU
and CUDA and the Triton row op alike, which a C++ driver could not do without going back through
Python; and to torch.compile it is one opaque op with a fake kernel, so fullgraph tracing never
sees the loop. Nothing in it synchronises a CUDA stream: the count of rows not ignored stays a
device tensor, and the mean's 1/count is applied in the backward (on the CPU, where reading it is
free, it goes into the row op's grad_scale instead, and the backward of loss.backward() hands the
gradients on untouched).
"""

import functools
import importlib.util
import warnings

import torch
from torch import Tensor

from tskd_fast.ops import _extension
from tskd_fast.ops.common import values_readable
from tskd_fast.ops.fused_linear_kd_chunks import (
    Linear,
    RowOptions,
    accumulator_dtype,
    choose_chunk_size,
    run_chunks,
)
from tskd_fast.ops.fused_linear_kd_dtd import dtd_temperatures

DIVERGENCES = {
    "forward_kl": 0,
    "reverse_kl": 1,
    "jsd": 2,
    "skew_forward_kl": 3,
    "skew_reverse_kl": 4,
    "tvd": 5,
}
REDUCTIONS = {"mean": 0, "sum": 1, "none": 2}
ROWS_OP = "tskd_fast::fused_linear_kd_rows"


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def fused_linear_kd_rows_fake(
    student: Tensor,
    teacher: Tensor | None,
    topk_ids: Tensor | None,
    topk_logprobs: Tensor | None,
    target: Tensor | None,
    temperature: Tensor,
    divergence: int,
    beta: float,
    ka: int,
    lsr_p: float,
    scale_tau2: bool,
    ce_weight: float,
    ignore_index: int,
    compute_grad: bool,
    grad_scale: float = 1.0,
) -> Tensor:
    return student.new_empty((student.shape[0],), dtype=_opmath(student.dtype))


def register_fused_linear_kd_rows_op(op) -> None:
    """Attach the fake kernel to one backend's row op."""
    torch.library.register_fake(op, fused_linear_kd_rows_fake)


if _extension.has_cpu_kernels():
    register_fused_linear_kd_rows_op(ROWS_OP)


_TRITON_MODULE = "tskd_fast.ops.triton.fused_linear_kd"


def _has_triton_rows() -> bool:
    from tskd_fast.ops.backend import triton_available

    return triton_available() and importlib.util.find_spec(_TRITON_MODULE) is not None


def _has_cuda_rows() -> bool:
    return _extension.has_cuda_kernels() and torch._C._dispatch_has_kernel_for_dispatch_key(ROWS_OP, "CUDA")


@functools.cache
def _warn_no_rows(device_type: str, why: str) -> None:
    warnings.warn(
        f"tskd_fast: no fused_linear_kd row kernel for {device_type} tensors ({why}); using the PyTorch "
        f"reference on full logits, which holds N x V tensors.",
        RuntimeWarning,
        stacklevel=4,
    )


@torch.compiler.assume_constant_result
def rows_backend(chosen: str, forced: bool, device: torch.device) -> str:
    """The row op backend for `chosen` (from resolve_backend): "cpu", "cuda" or "triton" when its
    row kernel exists; a forced backend without one raises ValueError, auto falls back (CUDA
    kernel -> Triton -> the reference, which is returned as "reference"). A constant to
    torch.compile: the dispatcher query, the module lookup and the warning happen outside the
    traced code."""
    if chosen in ("cpu", "reference"):
        return chosen
    if chosen == "cuda" and _has_cuda_rows():
        return "cuda"
    if chosen == "triton" or not forced:
        if _has_triton_rows():
            return "triton"
        if forced:
            raise ValueError(
                "backend='triton' is unavailable: this build has no Triton fused_linear_kd row kernel"
            )
        _warn_no_rows(device.type, "neither the CUDA nor the Triton row kernel is built")
        return "reference"
    raise ValueError("backend='cuda' is unavailable: tskd_fast._C has no CUDA fused_linear_kd row kernel")


def rows_op(backend: str):
    """The row op of a row backend ("cpu", "cuda" or "triton")."""
    if backend == "triton":
        module = importlib.import_module(_TRITON_MODULE)
        return module.fused_linear_kd_rows_triton
    return torch.ops.tskd_fast.fused_linear_kd_rows.default


# ---- the driver op --------------------------------------------------------------------------------


def _logits_bytes_per_row(vocab: int, student_dtype, teacher_dtype, has_teacher: bool) -> int:
    size = vocab * torch.empty((), dtype=student_dtype).element_size()
    if has_teacher:
        size += vocab * torch.empty((), dtype=teacher_dtype).element_size()
        if teacher_dtype != student_dtype:
            size += vocab * torch.empty((), dtype=student_dtype).element_size()
    return size


def _resolve_chunk_size(chunk_size: int, hidden: Tensor, vocab: int, teacher_hidden: Tensor | None) -> int:
    if chunk_size > 0:
        return chunk_size
    teacher_dtype = teacher_hidden.dtype if teacher_hidden is not None else hidden.dtype
    per_row = _logits_bytes_per_row(vocab, hidden.dtype, teacher_dtype, teacher_hidden is not None)
    return choose_chunk_size(hidden.shape[0], vocab, per_row, hidden.device)


def _sides(student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias):
    student = Linear(student_hidden.detach(), student_weight.detach(), _detached(student_bias))
    teacher = None
    if teacher_hidden is not None:
        teacher = Linear(teacher_hidden.detach(), teacher_weight.detach(), _detached(teacher_bias))
    return student, teacher


def _detached(t: Tensor | None) -> Tensor | None:
    return t.detach() if t is not None else None


def _empty(like: Tensor) -> Tensor:
    return like.new_empty((0,))


@torch.library.custom_op("tskd_fast::fused_linear_kd", mutates_args=())
def fused_linear_kd_op(
    student_hidden: Tensor,
    student_weight: Tensor,
    student_bias: Tensor | None,
    teacher_hidden: Tensor | None,
    teacher_weight: Tensor | None,
    teacher_bias: Tensor | None,
    topk_ids: Tensor | None,
    topk_logprobs: Tensor | None,
    target: Tensor | None,
    temperature: Tensor,
    teacher_gram: Tensor | None,
    divergence: int,
    beta: float,
    ka: int,
    lsr_p: float,
    scale_tau2: bool,
    ce_weight: float,
    ignore_index: int,
    reduction: int,
    vocab_size: int,
    chunk_size: int,
    dtd_mode: int,
    dtd_t0: float,
    dtd_beta: float,
    dtd_gamma: float,
    dtd_min_temperature: float,
    grad_hidden: bool,
    grad_weight: bool,
    grad_bias: bool,
    row_backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> (loss, temperature used (N,), dX, dW sum, db sum); the gradients are those of the loss
    (of the sum of the row losses for a mean off the CPU: the backward divides by the count), or
    empty (0,) tensors when not asked for or reduction is "none". dW and db are in
    accumulator_dtype (float32 for float16/bfloat16 weights)."""
    student, teacher = _sides(
        student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias
    )
    opmath = _opmath(student_hidden.dtype)
    chunk = _resolve_chunk_size(chunk_size, student_hidden, vocab_size, teacher_hidden)
    if dtd_mode >= 0:
        tau = dtd_temperatures(
            dtd_mode,
            student,
            teacher,
            target,
            ka,
            ignore_index,
            vocab_size,
            dtd_t0,
            dtd_beta,
            dtd_gamma,
            dtd_min_temperature,
            opmath,
            teacher_gram,
            chunk,
        )
    else:
        tau = temperature
    on_cpu = student_hidden.device.type == "cpu"
    grad_scale = 1.0
    if reduction == REDUCTIONS["mean"] and on_cpu:
        kept = student_hidden.shape[0] if target is None else int((target != ignore_index).sum())
        grad_scale = 1.0 / max(kept, 1)
    want = (grad_hidden, grad_weight, grad_bias) if reduction != REDUCTIONS["none"] else (False,) * 3
    topk = (topk_ids, topk_logprobs) if topk_ids is not None else None
    options = RowOptions(divergence, beta, ka, lsr_p, scale_tau2, ce_weight, ignore_index)
    row_loss, grads = run_chunks(
        rows_op(row_backend),
        student,
        teacher,
        topk,
        target,
        tau,
        options,
        vocab_size,
        chunk,
        want,
        grad_scale,
    )
    if reduction == REDUCTIONS["none"]:
        loss = row_loss
    elif reduction == REDUCTIONS["sum"]:
        loss = row_loss.sum()
    else:
        loss = row_loss.sum() / _kept_count(target, ignore_index, student_hidden.shape[0], opmath)
    return (
        loss,
        tau.clone() if tau is temperature else tau,
        grads.hidden if grads.hidden is not None else _empty(student_hidden),
        grads.weight if grads.weight is not None else _empty(student_weight),
        grads.bias if grads.bias is not None else _empty(student_weight),
    )


def _kept_count(target: Tensor | None, ignore_index: int, rows: int, dtype) -> Tensor | float:
    """max(1, rows not ignored), a device tensor (no host sync) or a float without target."""
    if target is None:
        return float(rows)
    return (target != ignore_index).sum().clamp_min(1).to(dtype)


@fused_linear_kd_op.register_fake
def _fused_linear_kd_fake(student_hidden, student_weight, student_bias, teacher_hidden, *rest):
    reduction, grad_hidden, grad_weight, grad_bias = rest[14], rest[22], rest[23], rest[24]
    rows = student_hidden.shape[0]
    opmath = _opmath(student_hidden.dtype)
    grads = reduction != REDUCTIONS["none"]
    loss = student_hidden.new_empty((rows,) if not grads else (), dtype=opmath)
    tau = student_hidden.new_empty((rows,), dtype=opmath)
    dh = student_hidden.new_empty(student_hidden.shape) if grads and grad_hidden else _empty(student_hidden)
    acc = accumulator_dtype(student_weight.dtype)
    dw = (
        student_weight.new_empty(student_weight.shape, dtype=acc)
        if grads and grad_weight
        else _empty(student_weight)
    )
    db = (
        student_weight.new_empty((student_weight.shape[0],), dtype=acc)
        if grads and grad_bias
        else _empty(student_weight)
    )
    return loss, tau, dh, dw, db


# Positions of the driver op's arguments that its backward needs.
_STUDENT_ARGS = 3  # student_hidden, student_weight, student_bias
_TARGET, _REDUCTION, _IGNORE = 8, 18, 17


def _setup_context(ctx, inputs, output) -> None:
    loss, tau, dh, dw, db = output
    ctx.mark_non_differentiable(tau, dh, dw, db)
    ctx.set_materialize_grads(False)
    ctx.num_inputs = len(inputs)
    ctx.reduction = inputs[_REDUCTION]
    ctx.ignore_index = inputs[_IGNORE]
    ctx.rows = inputs[0].shape[0]
    ctx.dtypes = (inputs[0].dtype, inputs[1].dtype, inputs[2].dtype if inputs[2] is not None else None)
    ctx.prescaled = inputs[0].device.type == "cpu"
    if ctx.reduction == REDUCTIONS["none"]:
        ctx.tensor_slots = [i for i, t in enumerate(inputs) if isinstance(t, Tensor)]
        ctx.inputs = [None if isinstance(t, Tensor) else t for t in inputs]
        ctx.save_for_backward(*[inputs[i] for i in ctx.tensor_slots], tau)
    else:
        ctx.save_for_backward(dh, dw, db, inputs[_TARGET])


def _scaled(grad: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """grad * scale in `dtype`, rounded once from the product in scale's dtype (a float16 or
    bfloat16 dX is widened first, so the scale itself is never rounded); on the CPU, eagerly, grad
    itself when scale is 1."""
    if grad.dtype == dtype and scale.device.type == "cpu" and values_readable(scale) and scale.item() == 1.0:
        return grad
    out = torch.empty(grad.shape, dtype=dtype, device=grad.device)
    return torch.mul(grad.to(scale.dtype), scale, out=out)


def _backward(ctx, grad_loss, grad_tau, grad_dh, grad_dw, grad_db):
    outputs: list[Tensor | None] = [None] * ctx.num_inputs
    if grad_loss is None:
        return tuple(outputs)
    if ctx.reduction == REDUCTIONS["none"]:
        saved = ctx.saved_tensors
        inputs = list(ctx.inputs)
        for slot, tensor in zip(ctx.tensor_slots, saved[:-1], strict=True):
            inputs[slot] = tensor
        tau = saved[-1]
        needs = ctx.needs_input_grad
        dh, dw, db = fused_linear_kd_backward_op(grad_loss, tau, *inputs, needs[0], needs[1], needs[2])
        for i, g in enumerate((dh, dw, db)):
            outputs[i] = g if needs[i] else None
        return tuple(outputs)
    dh, dw, db, target = ctx.saved_tensors
    scale = grad_loss
    if ctx.reduction == REDUCTIONS["mean"] and not ctx.prescaled:
        scale = scale / _kept_count(target, ctx.ignore_index, ctx.rows, scale.dtype)
    for i, g in enumerate((dh, dw, db)):
        if ctx.needs_input_grad[i] and g.numel() > 0:
            outputs[i] = _scaled(g, scale, ctx.dtypes[i])
    return tuple(outputs)


fused_linear_kd_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("tskd_fast::fused_linear_kd_backward", mutates_args=())
def fused_linear_kd_backward_op(
    grad_rows: Tensor,
    temperature_used: Tensor,
    student_hidden: Tensor,
    student_weight: Tensor,
    student_bias: Tensor | None,
    teacher_hidden: Tensor | None,
    teacher_weight: Tensor | None,
    teacher_bias: Tensor | None,
    topk_ids: Tensor | None,
    topk_logprobs: Tensor | None,
    target: Tensor | None,
    temperature: Tensor,
    teacher_gram: Tensor | None,
    divergence: int,
    beta: float,
    ka: int,
    lsr_p: float,
    scale_tau2: bool,
    ce_weight: float,
    ignore_index: int,
    reduction: int,
    vocab_size: int,
    chunk_size: int,
    dtd_mode: int,
    dtd_t0: float,
    dtd_beta: float,
    dtd_gamma: float,
    dtd_min_temperature: float,
    grad_hidden: bool,
    grad_weight: bool,
    grad_bias: bool,
    row_backend: str,
    need_hidden: bool,
    need_weight: bool,
    need_bias: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of reduction "none": the chunks again, with the temperatures of the forward,
    giving the gradients of sum_n grad_rows[n] loss_n in the inputs' dtypes ((0,) where not
    needed)."""
    student, teacher = _sides(
        student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias
    )
    chunk = _resolve_chunk_size(chunk_size, student_hidden, vocab_size, teacher_hidden)
    topk = (topk_ids, topk_logprobs) if topk_ids is not None else None
    options = RowOptions(divergence, beta, ka, lsr_p, scale_tau2, ce_weight, ignore_index)
    want = (need_hidden, need_weight, need_bias and student_bias is not None)
    _, grads = run_chunks(
        rows_op(row_backend),
        student,
        teacher,
        topk,
        target,
        temperature_used,
        options,
        vocab_size,
        chunk,
        want,
        row_weights=grad_rows,
    )
    dw = grads.weight.to(student_weight.dtype) if grads.weight is not None else _empty(student_weight)
    db = grads.bias.to(student_bias.dtype) if grads.bias is not None else _empty(student_weight)
    return grads.hidden if grads.hidden is not None else _empty(student_hidden), dw, db


@fused_linear_kd_backward_op.register_fake
def _fused_linear_kd_backward_fake(
    grad_rows, temperature_used, student_hidden, student_weight, student_bias, *rest
):
    need_hidden, need_weight, need_bias = rest[-3:]
    dh = student_hidden.new_empty(student_hidden.shape) if need_hidden else _empty(student_hidden)
    dw = student_weight.new_empty(student_weight.shape) if need_weight else _empty(student_weight)
    db = (
        student_bias.new_empty(student_bias.shape)
        if need_bias and student_bias is not None
        else _empty(student_weight)
    )
    return dh, dw, db
