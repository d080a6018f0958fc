"""FusedLinearKDLoss: distillation of a language model's lm_head outputs without their logits."""

from __future__ import annotations

import torch
from torch import nn

from tskd_fast.ops.fused_linear_kd_call import call_fused_linear_kd


def _weight_and_bias(name: str, head) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(weight, bias) of an lm_head given as a module (nn.Linear or anything with .weight and an
    optional .bias) or as a weight tensor."""
    if head is None:
        return None, None
    if isinstance(head, torch.Tensor):
        return head, None
    if isinstance(head, nn.Module) and isinstance(getattr(head, "weight", None), torch.Tensor):
        bias = getattr(head, "bias", None)
        return head.weight, bias if isinstance(bias, torch.Tensor) else None
    raise ValueError(
        f"{name} must be an nn.Module with a .weight (e.g. nn.Linear) or a weight tensor, got {type(head).__name__}"
    )


class FusedLinearKDLoss(nn.Module):
    """KD loss on a language model's next-token distributions, fused with both lm_heads.

    The options are those of tskd_fast.functional.fused_linear_kd (divergence, beta, temperature
    including "dtd", ka, ce_weight, ...). shift_labels=True takes (B, T, H) hidden states and
    (B, T) input labels of a causal LM and compares position t's prediction with label t + 1, as
    Hugging Face's causal-LM loss does.

    forward(student_hidden, student_lm_head, teacher_hidden=None, teacher_lm_head=None,
            labels=None, *, teacher_topk=None) -> loss
        lm_heads: nn.Linear-like modules or weight tensors (V, H). The teacher's get no gradient;
        the student's weight (and bias) get theirs through autograd, so DDP reduces them like any
        parameter. teacher_topk replaces teacher_hidden and teacher_lm_head.
    After each call, `last_temperature` holds the temperatures used (detached, one per row).
    """

    def __init__(
        self,
        divergence: str = "forward_kl",
        beta: float = 0.5,
        temperature: float | torch.Tensor | str = 2.0,
        ka: str = "none",
        ce_weight: float = 0.0,
        ignore_index: int = -100,
        reduction: str = "mean",
        vocab_size: int | None = None,
        chunk_size: int | None = None,
        backend: str = "auto",
        *,
        shift_labels: bool = False,
        lsr_p: float = 0.9,
        scale: str = "tau2",
        dtd_mode: str = "flsw",
        dtd_t0: float = 4.0,
        dtd_beta: float = 1.0,
        dtd_gamma: float = 2.0,
        dtd_min_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.divergence, self.beta, self.temperature, self.ka = divergence, beta, temperature, ka
        self.ce_weight, self.ignore_index, self.reduction = ce_weight, ignore_index, reduction
        self.vocab_size, self.chunk_size, self.backend = vocab_size, chunk_size, backend
        self.shift_labels, self.lsr_p, self.scale = shift_labels, lsr_p, scale
        self.dtd = dict(
            dtd_mode=dtd_mode,
            dtd_t0=dtd_t0,
            dtd_beta=dtd_beta,
            dtd_gamma=dtd_gamma,
            dtd_min_temperature=dtd_min_temperature,
        )
        self.last_temperature: torch.Tensor | None = None

    def _shift(self, hidden, labels, topk):
        if hidden is not None and hidden.dim() != 3:
            raise ValueError(
                f"shift_labels=True needs (B, T, H) hidden states, got shape {tuple(hidden.shape)}"
            )
        if hidden is not None:
            hidden = hidden[:, :-1]
        if topk is not None:
            topk = (topk[0][:, :-1], topk[1][:, :-1])
        return hidden, labels[:, 1:] if labels is not None else None, topk

    def forward(
        self,
        student_hidden: torch.Tensor,
        student_lm_head,
        teacher_hidden: torch.Tensor | None = None,
        teacher_lm_head=None,
        labels: torch.Tensor | None = None,
        *,
        teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        s_weight, s_bias = _weight_and_bias("student_lm_head", student_lm_head)
        t_weight, t_bias = _weight_and_bias("teacher_lm_head", teacher_lm_head)
        if self.shift_labels:
            student_hidden, shifted, _ = self._shift(student_hidden, labels, None)
            teacher_hidden, _, teacher_topk = self._shift(teacher_hidden, None, teacher_topk)
            labels = shifted
        loss, tau = call_fused_linear_kd(
            student_hidden,
            s_weight,
            teacher_hidden,
            t_weight.detach() if t_weight is not None else None,
            labels,
            self.divergence,
            self.beta,
            self.temperature,
            self.ka,
            self.ce_weight,
            self.ignore_index,
            self.reduction,
            self.vocab_size,
            self.chunk_size,
            self.backend,
            student_bias=s_bias,
            teacher_bias=t_bias.detach() if t_bias is not None else None,
            teacher_topk=teacher_topk,
            lsr_p=self.lsr_p,
            scale=self.scale,
            **self.dtd,
        )
        self.last_temperature = tau.detach()
        return loss

    def extra_repr(self) -> str:
        return (
            f"divergence={self.divergence!r}, beta={self.beta}, temperature={self.temperature!r}, "
            f"ka={self.ka!r}, ce_weight={self.ce_weight}, reduction={self.reduction!r}"
        )
