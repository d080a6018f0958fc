"""``reviewkd``: "Distilling Knowledge via Knowledge Review" (Chen et al., CVPR 2021).

The student's stage features (post-ReLU, or pre-ReLU with ``student_preact``) and its pooled
feature go through the ABF review stack (tskd_fast.nn.ReviewKDFusion, trained with the student
in its own parameter group, wrapped in DDP like it and checkpointed); each output is compared with
the teacher's pre-ReLU feature of the same level by the hierarchical context loss (term ``hcl``):

    loss = CE + lambda * min(1, epoch / W) * HCL      (epoch 0-based, as the official code)

with a warmup of W = ``warmup`` x epochs (default 20/240: the official 20 epochs of 240, so a short
run warms up over the same share of its length) or W = ``warmup_epochs`` when that is set.

lambda is ``distiller.terms.hcl`` (per pair in configs/*/reviewkd/); KD or DTD+KA terms combine
by weight (``distiller.terms.kd=0.9``). The layout is derived from the two models' stage channels,
so every pair of zoo models with equally many stages works, not only the paper's pairs
(tskd_fast.nn.review.PRESETS, which the derived layout reproduces).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

import tskd_fast.distillers.terms  # noqa: F401  (registers the ce term weighed here)
from tskd_fast.distillers.base import Distiller, LossTerm, StepOutputs, unwrap
from tskd_fast.distillers.registry import MethodEntry, TermEntry, register_method, register_term
from tskd_fast.models import FeatureDict
from tskd_fast.nn import HCLLoss, ReviewKDFusion
from tskd_fast.ops import BACKENDS
from tskd_fast.schema import Field, non_negative, positive

STUDENT_KEY, TEACHER_KEY = "review_student", "review_teacher"


def _fraction_of_run(value: float) -> str | None:
    return None if 0.0 <= value <= 1.0 else f"must be a fraction of the run in [0, 1], got {value}"


def _levels(value: list[int]) -> str | None:
    return (
        None
        if value and all(v >= 1 for v in value)
        else f"must be a non-empty list of ints >= 1, got {value}"
    )


class HCLTerm(LossTerm):
    """ReviewKD's HCL between the fused student features and the teacher's (tskd_fast.nn.HCLLoss).

    Reads ``outputs.extras["review_student"]`` / ``["review_teacher"]``, which the ``reviewkd``
    distiller computes; the term has no meaning without its ABFs.
    """

    needs_teacher = True
    needs_student_features = True
    needs_teacher_features = True

    def __init__(self, levels: list[int]) -> None:
        super().__init__()
        self.loss = HCLLoss(levels=tuple(levels))

    def forward(self, outputs: StepOutputs) -> Tensor:
        extras = outputs.extras or {}
        if STUDENT_KEY not in extras:
            raise ValueError(
                "the hcl loss term compares the ABF-fused student features with the teacher's; it needs "
                "distiller.name=reviewkd"
            )
        return self.loss(extras[STUDENT_KEY], extras[TEACHER_KEY])


OPTIONS = {
    "warmup": Field(
        20 / 240,
        float,
        "HCL weight factor min(1, epoch / (warmup * epochs)), epoch 0-based; a fraction of the run "
        "(the official 20 of 240 epochs); 0: none",
        check=_fraction_of_run,
    ),
    "warmup_epochs": Field(
        None,
        float,
        "the warmup in epochs instead (min(1, epoch / warmup_epochs); 0: none); null: use warmup",
        nullable=True,
        check=non_negative,
    ),
    "student_preact": Field(
        False, bool, "fuse the student's pre-ReLU features (ImageNet) instead of post-ReLU"
    ),
    "teacher_preact": Field(True, bool, "compare with the teacher's pre-ReLU features (the reference)"),
    "mid_channel": Field(
        None,
        int,
        "channels of the fused features; null: min(512, student pooled width)",
        nullable=True,
        check=positive,
    ),
    "lr_scale": Field(1.0, float, "lr factor of the ABF parameter group", check=positive),
    "backend": Field("auto", str, "implementation of the fused ABF and HCL ops", choices=BACKENDS),
}


def feature_levels(feats: FeatureDict, preact: bool) -> list[Tensor]:
    """Stages 1..K (``preact_feats`` or ``feats``, stem dropped) then the pooled feature as (N, C, 1, 1)."""
    stages = feats["preact_feats"] if preact else feats["feats"]
    pooled = feats["pooled_feat"]
    return [*stages[1:], pooled[:, :, None, None]]


def warmup_factor(epoch: int, warmup_epochs: float) -> float:
    """min(1, epoch / warmup_epochs) for a 0-based epoch; 1 without warmup."""
    return 1.0 if warmup_epochs <= 0 else min(1.0, epoch / warmup_epochs)


def warmup_length(options: Mapping[str, Any], num_epochs: int) -> float:
    """The HCL warmup of a run of ``num_epochs`` in epochs: ``warmup_epochs`` when set, else the
    fraction ``warmup`` of the run (20/240 of 240 epochs is the official 20)."""
    absolute = options["warmup_epochs"]
    return float(absolute) if absolute is not None else options["warmup"] * num_epochs


class ReviewKDDistiller(Distiller):
    """Student + teacher + the ABF review stack (``self.fusion``) feeding the ``hcl`` term."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        terms: Mapping[str, tuple[float, LossTerm]],
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(student, teacher, terms, options)
        assert teacher is not None, "registry.build_method checks the teacher"
        opts = self.options
        self.fusion: nn.Module | None = None
        if "hcl" in self.terms:
            self.fusion = ReviewKDFusion.for_models(
                unwrap(student), teacher, mid_channel=opts["mid_channel"], backend=opts["backend"]
            )
            self.terms["hcl"].loss.backend = opts["backend"]

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"fusion": self.fusion} if self.fusion is not None else {}

    def param_groups(self) -> list[dict[str, Any]]:
        modules = self.trainable_modules()
        groups: list[dict[str, Any]] = [
            {"params": [p for p in modules["student"].parameters() if p.requires_grad]}
        ]
        if "fusion" in modules:
            groups.append(
                {"params": list(modules["fusion"].parameters()), "lr_scale": self.options["lr_scale"]}
            )
        return groups

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        if "hcl" in self.term_factors:
            self.term_factors["hcl"] = warmup_factor(epoch, warmup_length(self.options, num_epochs))

    def run_extras(self, image: Tensor, outputs: StepOutputs) -> dict[str, Any]:
        if self.fusion is None:
            return {}
        assert outputs.student_features is not None and outputs.teacher_features is not None
        student = feature_levels(outputs.student_features, self.options["student_preact"])
        teacher = feature_levels(outputs.teacher_features, self.options["teacher_preact"])
        # Each fused output is resized to its teacher level (the official out_shapes), read from the
        # teacher's features so that any input size works.
        out_shapes = [tuple(f.shape[-2:]) for f in reversed(teacher)]
        return {STUDENT_KEY: self.fusion(student, out_shapes=out_shapes), TEACHER_KEY: teacher}


register_term(
    TermEntry(
        "hcl",
        HCLTerm,
        {
            "levels": Field(
                [4, 2, 1], list, "pool sizes of the hierarchical context loss", item=int, check=_levels
            )
        },
        "ReviewKD's hierarchical context loss between ABF-fused student and teacher features",
    )
)
register_method(
    MethodEntry(
        name="reviewkd",
        cls=ReviewKDDistiller,
        terms={"ce": 1.0, "hcl": 1.0},
        needs_teacher=True,
        options=OPTIONS,
        doc="ReviewKD: ABF review of the student stages + hierarchical context loss (CE + lambda * warmup * HCL)",
    )
)

__all__ = ["HCLTerm", "OPTIONS", "ReviewKDDistiller", "feature_levels", "warmup_factor", "warmup_length"]
