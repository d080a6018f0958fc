"""One call of the fused linear + KD loss from user arguments: checks, backend, the op.

tskd_fast.functional.fused_linear_kd and tskd_fast.nn.FusedLinearKDLoss both come here; the
module also gets the temperatures used (DTD's are computed inside the op).
"""

from __future__ import annotations

import torch

from tskd_fast import reference
from tskd_fast.ops.backend import default_backend, resolve_backend
from tskd_fast.ops.fused_linear_kd import DIVERGENCES, REDUCTIONS, fused_linear_kd_op, rows_backend
from tskd_fast.ops.fused_linear_kd_checks import Checked, check_fused_linear_kd
from tskd_fast.ops.fused_linear_kd_dtd import DTD_MODES, cached_teacher_gram
from tskd_fast.ops.kd_loss import KA_MODES


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
    c = check_fused_linear_kd(
        student_hidden,
        student_weight,
        teacher_hidden,
        teacher_weight,
        target,
        divergence,
        beta,
        temperature,
        ka,
        ce_weight,
        ignore_index,
        reduction,
        vocab_size,
        chunk_size,
        student_bias,
        teacher_bias,
        teacher_topk,
        lsr_p,
        scale,
        dtd_mode,
        dtd_t0,
        dtd_beta,
        dtd_gamma,
        dtd_min_temperature,
    )
    device = c.student_hidden.device
    forced = (backend if backend not in (None, "auto") else default_backend()) != "auto"
    chosen = resolve_backend(backend, device)
    if chosen != "reference":
        chosen = rows_backend(chosen, forced, device)
    if chosen == "reference":
        loss, tau = _reference(
            c,
            dict(
                divergence=divergence,
                beta=float(beta),
                ka=ka,
                lsr_p=float(lsr_p),
                scale=scale,
                ce_weight=float(ce_weight),
                ignore_index=int(ignore_index),
                reduction=reduction,
                dtd_mode=dtd_mode,
                dtd_t0=float(dtd_t0),
                dtd_beta=float(dtd_beta),
                dtd_gamma=float(dtd_gamma),
                dtd_min_temperature=float(dtd_min_temperature),
            ),
        )
    else:
        grad_on = torch.is_grad_enabled()
        opmath = torch.float64 if c.student_hidden.dtype == torch.float64 else torch.float32
        dtd = c.temperature is None
        teacher_gram = None
        if dtd and dtd_mode == "flsw" and not torch.compiler.is_compiling():
            teacher_gram = cached_teacher_gram(
                c.teacher_weight.detach(), _detach(c.teacher_bias), c.vocab, opmath
            )
        tau_in = c.temperature if not dtd else c.student_hidden.new_empty((0,), dtype=opmath)
        loss, tau, *_ = fused_linear_kd_op(
            c.student_hidden,
            c.student_weight,
            c.student_bias,
            _detach(c.teacher_hidden),
            _detach(c.teacher_weight),
            _detach(c.teacher_bias),
            c.topk_ids,
            c.topk_logprobs,
            c.target,
            tau_in,
            teacher_gram,
            DIVERGENCES[divergence],
            float(beta),
            KA_MODES[ka],
            float(lsr_p),
            scale == "tau2",
            float(ce_weight),
            int(ignore_index),
            REDUCTIONS[reduction],
            c.vocab,
            c.chunk_size,
            DTD_MODES[dtd_mode] if dtd else -1,
            float(dtd_t0),
            float(dtd_beta),
            float(dtd_gamma),
            float(dtd_min_temperature),
            grad_on and c.student_hidden.requires_grad,
            grad_on and c.student_weight.requires_grad,
            grad_on and c.student_bias is not None and c.student_bias.requires_grad,
            chosen,
        )
    if reduction == "none":
        loss = loss.reshape(c.lead_shape)
    return loss, tau.reshape(c.lead_shape)


def _detach(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.detach() if t is not None else None
