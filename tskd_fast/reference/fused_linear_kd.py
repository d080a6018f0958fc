"""The linear + KD loss of language-model distillation in plain PyTorch, on full logits.

The oracle of the fused op (tskd_fast.functional.fused_linear_kd) and the eager baseline of its
benchmark: every option, differentiable with autograd with respect to the student's hidden
states, weight and bias. Definitions: docs/methods.md §5; the top-k temperature: §5.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tskd_fast.reference.dtd import dtd_weight, temperatures_from_weights
from tskd_fast.reference.kd_loss import _opmath, kd_target

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd")


def _plogq(p: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """p (log_a - log_b) with 0 where p == 0 (0 log 0 = 0)."""
    return torch.where(p > 0, p * (log_a - log_b), torch.zeros_like(p))


def divergence_rows(
    log_p: torch.Tensor, log_q: torch.Tensor, divergence: str, beta: float = 0.5
) -> torch.Tensor:
    """D(p, q) per row (summed over the last dimension) from log-probabilities.

    p is the target (teacher), q the student; forward_kl = KL(p||q), reverse_kl = KL(q||p),
    jsd = beta KL(p||m) + (1-beta) KL(q||m) with m = beta p + (1-beta) q, skew_forward_kl =
    KL(p || beta p + (1-beta) q), skew_reverse_kl = KL(q || beta q + (1-beta) p), tvd =
    1/2 sum |p - q|.
    """
    p, q = log_p.exp(), log_q.exp()
    if divergence == "forward_kl":
        terms = _plogq(p, log_p, log_q)
    elif divergence == "reverse_kl":
        terms = _plogq(q, log_q, log_p)
    elif divergence == "tvd":
        terms = 0.5 * (p - q).abs()
    elif divergence in ("jsd", "skew_forward_kl"):
        log_m = torch.log(beta * p + (1.0 - beta) * q)
        if divergence == "jsd":
            terms = beta * _plogq(p, log_p, log_m) + (1.0 - beta) * _plogq(q, log_q, log_m)
        else:
            terms = _plogq(p, log_p, log_m)
    elif divergence == "skew_reverse_kl":
        terms = _plogq(q, log_q, torch.log(beta * q + (1.0 - beta) * p))
    else:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    return terms.sum(dim=-1)


def topk_teacher_log_buckets(
    ids: torch.Tensor, logprobs: torch.Tensor, tau: torch.Tensor, vocab_size: int
) -> torch.Tensor:
    """(N, K + 1) log-probabilities of a top-k teacher at temperature tau: the K listed ids, then
    the tail.

    The teacher's tail mass 1 - sum exp(logprobs) is spread evenly over the vocab_size - K ids
    not listed; that full distribution at temperature tau is p^(1/tau) renormalised, and its tail
    is summed into one bucket. At tau = 1 this is exactly (exp(logprobs), tail mass).
    """
    lp = logprobs.to(tau.dtype)
    inv_tau = (1.0 / tau).unsqueeze(1)
    rest = vocab_size - ids.shape[1]
    tail1 = (1.0 - lp.exp().sum(dim=1, keepdim=True)).clamp_min(0.0)
    if rest > 0:
        log_rest = torch.log(torch.tensor(float(rest), dtype=tau.dtype, device=tau.device))
        l_tail = log_rest + (torch.log(tail1) - log_rest) * inv_tau
    else:
        l_tail = torch.full_like(tail1, float("-inf"))
    logs = torch.cat([lp * inv_tau, l_tail], dim=1)
    return logs - torch.logsumexp(logs, dim=1, keepdim=True)


def topk_student_log_buckets(log_q: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(N, K + 1) log-probabilities of the student on the buckets of topk_teacher_log_buckets:
    its log_q (N, V) at the ids, and the log of its mass everywhere else."""
    listed = log_q.gather(1, ids)
    outside = torch.ones_like(log_q, dtype=torch.bool).scatter(1, ids, False)
    tail = torch.logsumexp(log_q.masked_fill(~outside, float("-inf")), dim=1, keepdim=True)
    return torch.cat([listed, tail], dim=1)


def _cut(bias: torch.Tensor | None, vocab: int) -> torch.Tensor | None:
    return bias[:vocab] if bias is not None else None


def _temperature_rows(
    temperature, rows: int, opmath: torch.dtype, device: torch.device, dtd_weights
) -> torch.Tensor:
    if isinstance(temperature, str):
        return dtd_weights()
    if isinstance(temperature, torch.Tensor):
        return temperature.detach().to(device=device, dtype=opmath).expand(rows)
    return torch.full((rows,), float(temperature), dtype=opmath, device=device)


def fused_linear_kd(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float | torch.Tensor | str = 2.0,
    ka: str = "none",
    lsr_p: float = 0.9,
    scale: str = "tau2",
    ce_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    vocab_size: int | None = None,
    dtd_mode: str = "flsw",
    dtd_t0: float = 4.0,
    dtd_beta: float = 1.0,
    dtd_gamma: float = 2.0,
    dtd_min_temperature: float = 0.1,
    return_temperature: bool = False,
):
    """Reference of tskd_fast.functional.fused_linear_kd (same arguments, no checks), on full
    logits: the matmuls in the inputs' dtype, the loss in float32 (float64 for float64 inputs).

    Rows whose label is ignore_index contribute nothing; reduction "mean" divides by the number
    of the other rows (at least 1), "sum" sums, "none" gives (N,) per-row losses (0 on ignored
    rows). Returns the loss in the compute dtype, and the (N,) temperatures used when
    return_temperature.
    """
    opmath = _opmath(student_hidden.dtype)
    rows = student_hidden.shape[0]
    vocab = vocab_size if vocab_size is not None else student_weight.shape[0]
    # The matmuls in the inputs' dtype, as eager code runs them, then the loss in opmath.
    s = F.linear(student_hidden, student_weight[:vocab], _cut(student_bias, vocab)).to(opmath)
    t = None
    if teacher_topk is None:
        with torch.no_grad():
            t = F.linear(teacher_hidden, teacher_weight[:vocab], _cut(teacher_bias, vocab)).to(opmath)
    if target is not None:
        kept = target != ignore_index
    else:
        kept = torch.ones(rows, dtype=torch.bool, device=s.device)

    def dtd_weights() -> torch.Tensor:
        with torch.no_grad():
            teacher = t if t is not None else s.detach()
            w = dtd_weight(s.detach(), teacher, target, dtd_mode, dtd_gamma, ka, ignore_index)
            w = torch.where(kept, w, torch.full_like(w, float("nan")))
            return temperatures_from_weights(w, dtd_t0, dtd_beta, dtd_min_temperature)

    tau = _temperature_rows(temperature, rows, opmath, s.device, dtd_weights)
    log_q = F.log_softmax(s / tau.unsqueeze(1), dim=1)
    if teacher_topk is None:
        p = kd_target(t, target, tau, ka, lsr_p, ignore_index)
        log_p = torch.log(p)
    else:
        ids, logprobs = teacher_topk
        log_p = topk_teacher_log_buckets(ids, logprobs, tau, vocab)
        log_q = topk_student_log_buckets(log_q, ids)
    row = divergence_rows(log_p, log_q, divergence, beta)
    if scale == "tau2":
        row = row * tau.square()
    if ce_weight != 0.0:
        row = row + ce_weight * F.cross_entropy(s, target, reduction="none", ignore_index=ignore_index)
    row = torch.where(kept, row, torch.zeros_like(row))
    if reduction == "mean":
        out = row.sum() / kept.sum().clamp_min(1)
    elif reduction == "sum":
        out = row.sum()
    else:
        out = row
    return (out, tau) if return_temperature else out
