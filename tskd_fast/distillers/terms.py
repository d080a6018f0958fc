"""The built-in loss terms a distiller combines with weights: hard-label CE, KD, and DTD+KA.

Every term is a ``LossTerm`` (``base``) built from its options section (``distiller.<term>``) and
called on a ``StepOutputs``; it states what it needs (teacher logits, student/teacher features),
so the distiller runs only the forward passes the active terms use. The math lives in
tskd_fast.nn / tskd_fast.functional; these classes only adapt it to the config. Importing this
module registers the terms.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from tskd_fast.distillers.base import LossTerm, StepOutputs
from tskd_fast.distillers.registry import TermEntry, register_term
from tskd_fast.nn import DTDKDLoss, KDLoss
from tskd_fast.schema import Field, non_negative, positive, probability, unit_interval


class CrossEntropyTerm(LossTerm):
    """Hard-label cross-entropy of the student logits (optionally label-smoothed)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, outputs: StepOutputs) -> Tensor:
        return F.cross_entropy(outputs.student_logits, outputs.target, label_smoothing=self.label_smoothing)


class KDTerm(LossTerm):
    """Hinton's KD at a fixed temperature, optionally with knowledge adjustment (tskd_fast.nn.KDLoss)."""

    needs_teacher = True

    def __init__(self, temperature: float, ka: str, lsr_p: float, scale: str) -> None:
        super().__init__()
        self.loss = KDLoss(T=temperature, ka=ka, lsr_p=lsr_p, scale=scale)

    def forward(self, outputs: StepOutputs) -> Tensor:
        assert outputs.teacher_logits is not None
        target = outputs.target if self.loss.ka != "none" else None
        return self.loss(outputs.student_logits, outputs.teacher_logits, target)


class DTDKATerm(LossTerm):
    """KD with dynamic per-sample temperatures (DTD) and knowledge adjustment (tskd_fast.nn.DTDKDLoss).

    The last batch's mean temperature is exposed as ``last_mean_temperature`` for logging.
    """

    needs_teacher = True

    def __init__(
        self,
        t0: float,
        beta: float,
        gamma: float,
        mode: str,
        min_temperature: float,
        ka: str,
        lsr_p: float,
        scale: str,
    ) -> None:
        super().__init__()
        self.loss = DTDKDLoss(
            t0=t0,
            beta=beta,
            gamma=gamma,
            mode=mode,
            min_temperature=min_temperature,
            ka=ka,
            lsr_p=lsr_p,
            scale=scale,
        )

    def forward(self, outputs: StepOutputs) -> Tensor:
        assert outputs.teacher_logits is not None
        return self.loss(outputs.student_logits, outputs.teacher_logits, outputs.target)

    @property
    def last_mean_temperature(self) -> float | None:
        tau = float(self.loss.mean_temperature)  # NaN until the loss has run
        return None if math.isnan(tau) else tau


_KA = ("none", "ps", "lsr")
_SCALE = ("tau2", "none")

register_term(
    TermEntry(
        "ce",
        CrossEntropyTerm,
        {"label_smoothing": Field(0.0, float, "label smoothing of the hard-label CE", check=unit_interval)},
        "cross-entropy with the ground-truth labels",
    )
)
register_term(
    TermEntry(
        "kd",
        KDTerm,
        {
            "temperature": Field(4.0, float, "softmax temperature T", check=positive),
            "ka": Field("none", str, "knowledge adjustment of the teacher target", choices=_KA),
            "lsr_p": Field(0.9, float, "correct-class probability of ka=lsr", check=probability),
            "scale": Field("tau2", str, "multiply by T^2 (Hinton) or not", choices=_SCALE),
        },
        "Hinton's KD: T^2 * KL(teacher || student) at temperature T",
    )
)
register_term(
    TermEntry(
        "dtd_ka",
        DTDKATerm,
        {
            "t0": Field(4.0, float, "base temperature T0", check=positive),
            "beta": Field(1.0, float, "temperature spread: tau = T0 + beta * (mean(w) - w)"),
            "gamma": Field(2.0, float, "FLSW focusing exponent", check=non_negative),
            "mode": Field(
                "flsw", str, "DTD weight: flsw (logit cosine) or cwsm (confidence)", choices=("flsw", "cwsm")
            ),
            "min_temperature": Field(0.1, float, "lower clamp of the per-sample temperature", check=positive),
            "ka": Field("ps", str, "knowledge adjustment of the teacher target", choices=_KA),
            "lsr_p": Field(0.9, float, "correct-class probability of ka=lsr", check=probability),
            "scale": Field("tau2", str, "multiply each row by tau^2 (Hinton) or not", choices=_SCALE),
        },
        "KD with dynamic per-sample temperatures (DTD) and knowledge adjustment (KA)",
    )
)


__all__ = ["CrossEntropyTerm", "DTDKATerm", "KDTerm"]
