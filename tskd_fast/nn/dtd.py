"""Dynamic temperature distillation modules: DTDTemperature and DTDKDLoss."""

from __future__ import annotations

import torch
from torch import nn

from tskd_fast import functional as F


class DTDTemperature(nn.Module):
    """Per-sample temperatures of dynamic temperature distillation (no parameters, no gradient).

    forward(student_logits (B, C), teacher_logits (B, C), target (B,) or None) -> tau (B,)
    """

    def __init__(
        self,
        t0: float = 4.0,
        beta: float = 1.0,
        gamma: float = 2.0,
        mode: str = "flsw",
        min_temperature: float = 0.1,
        ka: str = "none",
        ignore_index: int = -100,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.t0, self.beta, self.gamma, self.mode = t0, beta, gamma, mode
        self.min_temperature, self.ka, self.ignore_index, self.backend = (
            min_temperature,
            ka,
            ignore_index,
            backend,
        )

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.dtd_temperature(
            student_logits,
            teacher_logits,
            t0=self.t0,
            beta=self.beta,
            gamma=self.gamma,
            mode=self.mode,
            min_temperature=self.min_temperature,
            target=target,
            ka=self.ka,
            ignore_index=self.ignore_index,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"t0={self.t0}, beta={self.beta}, gamma={self.gamma}, mode={self.mode!r}"


class DTDKDLoss(nn.Module):
    """DTD temperatures + knowledge adjustment + KD loss (+ optional CE) in one module.

    The temperatures come from DTDTemperature (which sees the probability-shifted teacher when
    ka="ps"), then the fused KD loss runs with them. For logging, eager calls keep the last
    batch's temperatures in `last_temperature`, and every call (compiled ones too) writes their
    mean into the buffer `mean_temperature` (NaN before the first call), on the device, without
    a host read.

    ka defaults to "ps", as the ``dtd_ka`` loss term: "Preparing Lessons" trains with knowledge
    adjustment and dynamic temperatures together, and the probability shift is the adjustment that
    keeps the teacher's distribution (a permutation of it) for the temperatures to soften, where LSR
    replaces it. The labels are then required; ka="none" is DTD alone.

    forward(student_logits (B, C), teacher_logits (B, C), target (B,)) -> loss
    """

    def __init__(
        self,
        t0: float = 4.0,
        beta: float = 1.0,
        gamma: float = 2.0,
        mode: str = "flsw",
        min_temperature: float = 0.1,
        ka: str = "ps",
        lsr_p: float = 0.9,
        scale: str = "tau2",
        ce_weight: float = 0.0,
        ignore_index: int = -100,
        reduction: str = "batchmean",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.temperature = DTDTemperature(t0, beta, gamma, mode, min_temperature, ka, ignore_index, backend)
        self.ka, self.lsr_p, self.scale = ka, lsr_p, scale
        self.ce_weight, self.ignore_index = ce_weight, ignore_index
        self.reduction, self.backend = reduction, backend
        self.last_temperature: torch.Tensor | None = None
        self.register_buffer("mean_temperature", torch.tensor(float("nan")), persistent=False)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        tau = self.temperature(student_logits, teacher_logits, target)
        if not torch.compiler.is_compiling():
            # A compiled step's output tensors are reused by the next step (CUDA graphs): only
            # eager calls keep a reference; the mean is copied into a buffer either way.
            self.last_temperature = tau
        mean = tau.detach().mean().float()
        if self.mean_temperature.device == mean.device:
            self.mean_temperature.copy_(mean)
        else:  # a module left on another device than its inputs: no cross-device copy per call
            self.mean_temperature = mean
        return F.kd_loss(
            student_logits,
            teacher_logits,
            target,
            temperature=tau,
            ka=self.ka,
            lsr_p=self.lsr_p,
            scale=self.scale,
            ce_weight=self.ce_weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            backend=self.backend,
        )
