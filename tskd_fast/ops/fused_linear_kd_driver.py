"""The bodies of the fused linear + KD driver ops (specs in tskd_fast.ops.fused_linear_kd) and the
choice of their row op.

The forward runs the chunk loop of tskd_fast.ops.fused_linear_kd_chunks with the row op of a
backend, so that it returns the loss and holds dX, dW and db, and the backward only scales them by
the incoming gradient. Reduction "none" is the exception: per-row upstream weights cannot be
folded into a dW summed over rows, so its backward runs the chunks again
(`fused_linear_kd_backward`).

The driver is Python rather than C++: its cost is the matmuls (milliseconds per chunk), beside
which a Python loop over tens of chunks is nothing; one driver calls the C++ row op on the CPU and
CUDA and the Triton row op alike, which a C++ driver could not do without going back through
Python; and to torch.compile it is one opaque op with a fake kernel, so fullgraph tracing never
sees the loop. Nothing in it synchronises a CUDA stream: the count of rows not ignored stays a
device tensor, and the mean's 1/count is applied in the backward (on the CPU, where reading it is
free, it goes into the row op's grad_scale instead, and the backward of loss.backward() hands the
gradients on untouched). docs/methods.md §5.5.4.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from tskd_fast.ops import _extension
from tskd_fast.ops.common import opmath_dtype
from tskd_fast.ops.fused_linear_kd_checks import NO_DTD, REDUCTIONS
from tskd_fast.ops.fused_linear_kd_chunks import Linear, RowOptions, choose_chunk_size, run_chunks
from tskd_fast.ops.fused_linear_kd_dtd import dtd_temperatures
from tskd_fast.ops.library import SPECS, op_for

ROWS = "fused_linear_kd_rows"
MEAN, SUM, NONE = REDUCTIONS["mean"], REDUCTIONS["sum"], REDUCTIONS["none"]


# ---- the row op -----------------------------------------------------------------------------------


def _has_triton_rows() -> bool:
    from tskd_fast.ops.backend import triton_available

    return "triton" in SPECS[ROWS].kernels and triton_available()


def _has_cuda_rows() -> bool:
    return _extension.has_cuda_kernels() and torch._C._dispatch_has_kernel_for_dispatch_key(
        f"tskd_fast::{ROWS}", "CUDA"
    )


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
    torch.compile: the dispatcher query, the spec lookup and the warning stay out of the traced
    code."""
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
    return op_for(backend, ROWS)


# ---- the forward and the backward of reduction "none" ---------------------------------------------


def _logits_bytes_per_row(vocab: int, student_dtype, teacher_dtype, has_teacher: bool) -> int:
    size = vocab * student_dtype.itemsize
    if has_teacher:
        size += vocab * teacher_dtype.itemsize
        if teacher_dtype != student_dtype:
            size += vocab * student_dtype.itemsize
    return size


def _chunk_size(chunk_size: int, hidden: Tensor, vocab: int, teacher_hidden: Tensor | None) -> int:
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


def empty(like: Tensor) -> Tensor:
    """The (0,) tensor of an output that was not asked for."""
    return like.new_empty((0,))


def kept_count(target: Tensor | None, ignore_index: int, rows: int, dtype) -> Tensor | float:
    """max(1, rows not ignored), a device tensor (no host sync) or a float without target."""
    if target is None:
        return float(rows)
    return (target != ignore_index).sum().clamp_min(1).to(dtype)


def fused_linear_kd_forward(
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
    """The body of tskd_fast::fused_linear_kd on checked arguments (the spec's schema gives the
    outputs)."""
    student, teacher = _sides(
        student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias
    )
    opmath = opmath_dtype(student_hidden.dtype)
    chunk = _chunk_size(chunk_size, student_hidden, vocab_size, teacher_hidden)
    if dtd_mode != NO_DTD:
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
    grad_scale = 1.0
    if reduction == MEAN and student_hidden.device.type == "cpu":
        kept = student_hidden.shape[0] if target is None else int((target != ignore_index).sum())
        grad_scale = 1.0 / max(kept, 1)
    want = (grad_hidden, grad_weight, grad_bias) if reduction != NONE else (False,) * 3
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
    if reduction == NONE:
        loss = row_loss
    elif reduction == SUM:
        loss = row_loss.sum()
    else:
        loss = row_loss.sum() / kept_count(target, ignore_index, student_hidden.shape[0], opmath)
    return (
        loss,
        tau.clone() if tau is temperature else tau,
        grads.hidden if grads.hidden is not None else empty(student_hidden),
        grads.weight if grads.weight is not None else empty(student_weight),
        grads.bias if grads.bias is not None else empty(student_weight),
    )


def fused_linear_kd_backward(
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
    """The body of tskd_fast::fused_linear_kd_backward: the chunks again, with the forward's
    temperatures, giving the gradients of sum_n grad_rows[n] loss_n in the inputs' dtypes ((0,)
    where not needed)."""
    student, teacher = _sides(
        student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias
    )
    chunk = _chunk_size(chunk_size, student_hidden, vocab_size, teacher_hidden)
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
    dw = grads.weight.to(student_weight.dtype) if grads.weight is not None else empty(student_weight)
    db = grads.bias.to(student_bias.dtype) if grads.bias is not None else empty(student_weight)
    return grads.hidden if grads.hidden is not None else empty(student_hidden), dw, db
