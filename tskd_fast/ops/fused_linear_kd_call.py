"""One call of the fused linear + KD loss from user arguments: checks, backend, the op.

tskd_fast.functional.fused_linear_kd and tskd_fast.nn.FusedLinearKDLoss both come here; the
module also gets the temperatures used (DTD's are computed inside the op).
"""

from __future__ import annotations

import math

import torch

from tskd_fast import reference
from tskd_fast.ops.backend import default_backend, resolve_backend
from tskd_fast.ops.common import opmath_dtype
from tskd_fast.ops.dtd import DTD_MODES
from tskd_fast.ops.fused_linear_kd import FUSED_LINEAR_KD
from tskd_fast.ops.fused_linear_kd_checks import (
    Checked,
    check_for_reference,
    convert,
    op_arguments,
)
from tskd_fast.ops.fused_linear_kd_driver import rows_backend
from tskd_fast.ops.fused_linear_kd_dtd import cached_teacher_gram
from tskd_fast.ops.library import call


def _autocast(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Under torch.autocast the lm_head matmuls run in the autocast dtype, as F.linear would: the
    hidden states, weights and biases are cast (differentiably, so a float32 master weight gets
    its gradient) to it."""
    first = tensors[0]
    if not isinstance(first, torch.Tensor) or first.device.type not in ("cuda", "cpu"):
        return tensors
    kind = first.device.type
    if not torch.is_autocast_enabled(kind):
        return tensors
    dtype = torch.get_autocast_dtype(kind)
    return tuple(
        t.to(dtype)
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
        else t
        for t in tensors
    )


def _reference(c: Checked, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return reference.fused_linear_kd(
        c.student_hidden,
        c.student_weight,
        c.teacher_hidden,
        c.teacher_weight,
        c.target,
        student_bias=c.student_bias,
        teacher_bias=c.teacher_bias,
        teacher_topk=(c.topk_ids, c.topk_logprobs) if c.topk_ids is not None else None,
        temperature=c.temperature if c.temperature is not None else "dtd",
        vocab_size=c.vocab,
        return_temperature=True,
        **kwargs,
    )


def call_fused_linear_kd(
    student_hidden,
    student_weight,
    teacher_hidden=None,
    teacher_weight=None,
    target=None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature=2.0,
    ka: str = "none",
    ce_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    vocab_size: int | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
    *,
    student_bias=None,
    teacher_bias=None,
    teacher_topk=None,
    lsr_p: float = 0.9,
    scale: str = "tau2",
    dtd_mode: str = "flsw",
    dtd_t0: float = 4.0,
    dtd_beta: float = 1.0,
    dtd_gamma: float = 2.0,
    dtd_min_temperature: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, the (N,) temperatures used) of tskd_fast.functional.fused_linear_kd."""
    student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias = _autocast(
        student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias
    )
    c = convert(
        student_hidden,
        student_weight,
        teacher_hidden,
        teacher_weight,
        target,
        divergence,
        temperature,
        ka,
        reduction,
        vocab_size,
        chunk_size,
        student_bias,
        teacher_bias,
        teacher_topk,
        scale,
        dtd_mode,
    )
    numbers = (
        _float("beta", beta),
        _float("lsr_p", lsr_p),
        _float("ce_weight", ce_weight),
        _int("ignore_index", ignore_index),
        _float("dtd_t0", dtd_t0),
        _float("dtd_beta", dtd_beta),
        _float("dtd_gamma", dtd_gamma),
        _float("dtd_min_temperature", dtd_min_temperature),
    )
    device = c.student_hidden.device
    forced = (backend if backend not in (None, "auto") else default_backend()) != "auto"
    chosen = resolve_backend(backend, device)
    if chosen != "reference":
        chosen = rows_backend(chosen, forced, device)
    if chosen == "reference":
        check_for_reference(c, numbers)
        beta, lsr_p, ce_weight, ignore_index, dtd_t0, dtd_beta, dtd_gamma, dtd_min_temperature = numbers
        loss, tau = _reference(
            c,
            dict(
                divergence=divergence,
                beta=beta,
                ka=ka,
                lsr_p=lsr_p,
                scale=scale,
                ce_weight=ce_weight,
                ignore_index=ignore_index,
                reduction=reduction,
                dtd_mode=dtd_mode,
                dtd_t0=dtd_t0,
                dtd_beta=dtd_beta,
                dtd_gamma=dtd_gamma,
                dtd_min_temperature=dtd_min_temperature,
            ),
        )
    else:
        grad_on = torch.is_grad_enabled()
        teacher_gram = None
        # (flsw without a teacher lm_head: the op's check refuses it)
        flsw = c.dtd_mode == DTD_MODES["flsw"] and isinstance(c.teacher_weight, torch.Tensor)
        if flsw and not torch.compiler.is_compiling():
            opmath = opmath_dtype(c.student_hidden.dtype)
            teacher_gram = cached_teacher_gram(
                c.teacher_weight.detach(), _detach(c.teacher_bias), c.vocab, opmath
            )
        c.teacher_hidden, c.teacher_weight, c.teacher_bias = (
            _detach(c.teacher_hidden),
            _detach(c.teacher_weight),
            _detach(c.teacher_bias),
        )
        grads = (
            grad_on and c.student_hidden.requires_grad,
            grad_on and c.student_weight.requires_grad,
            grad_on and c.student_bias is not None and c.student_bias.requires_grad,
        )
        loss, tau, *_ = call(FUSED_LINEAR_KD, chosen, op_arguments(c, teacher_gram, numbers, grads, chosen))
    if reduction == "none":
        loss = loss.reshape(c.lead_shape)
    return loss, tau.reshape(c.lead_shape)


def _detach(t):
    """t detached; None and what is not a tensor (for the op's check to name) as they are."""
    return t.detach() if isinstance(t, torch.Tensor) else t


def _float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return value
