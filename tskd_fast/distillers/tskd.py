"""``tskd``: Temporal Supervised KD, "Review helps learn better" (docs/methods.md §3).

Every epoch: CE + KD (T = 4; weights 1 and 1 as in the reference's train.py). The run is cut into
*points* every ``period`` of the run; each cycle of ``memory_points + 1`` points is
``memory_points`` memory epochs (at their end the student's weights are copied into snapshot
1, 2, ...) followed by one review epoch. On review epochs the three snapshots (held in memory,
run under no_grad) and the current student give each branch an increment sequence; a ConvLSTM
encoder–forecaster per branch predicts the next increment and is pulled toward the current
student–teacher attention gap (the review loss, ``tskd_fast.nn.TSKDReview``), added with
``review_weight``. Epochs between points are plain CE + KD.

The ConvLSTMs are trained only on review epochs. Outside them they do not run, so their
gradients stay None and SGD applies neither weight decay nor momentum to them (the reference,
under PyTorch 1.9, kept zero-valued gradients and so kept decaying them). requires_grad stays
True: a DDP wrapper built in a non-review epoch would otherwise never all-reduce them.

The reference's schedule (240 epochs, a point every 5 epochs, 3 memory points then 1 review:
reviews at 15, 35, ..., 235) is ``period = 5/240``; the period scales with the run length
(at least one epoch), so the 8-epoch default run reviews at epochs 4 and 8 (1-based).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import tskd_fast.distillers.terms  # noqa: F401  (registers the ce and kd terms weighed here)
from tskd_fast.distillers.base import Distiller, DistillerSetupError, LossTerm, StepOutputs, unwrap
from tskd_fast.distillers.registry import MethodEntry, register_method
from tskd_fast.nn.tskd import ATTENTION_NORMS, TSKDReview
from tskd_fast.schema import Field, non_negative

REVIEW_LOSS = "tskd_review"
FEATURE_KEYS = ("feats", "preact_feats")


def _fraction(value: Any) -> str | None:
    return None if 0.0 < value <= 1.0 else f"must be a fraction of the run in (0, 1], got {value}"


def _at_least_one(value: Any) -> str | None:
    return None if value >= 1 else f"must be >= 1, got {value}"


def _widths(value: Any) -> str | None:
    if value is None or all(v >= 1 for v in value):
        return None
    return f"must list positive widths, got {value}"


OPTIONS = {
    "period": Field(
        5 / 240,
        float,
        "distance between consecutive memory/review points, as a fraction of the run (reference: 5/240)",
        check=_fraction,
    ),
    "period_epochs": Field(
        None,
        int,
        "the distance in epochs instead (the reference: 5); null: use period",
        nullable=True,
        check=_at_least_one,
    ),
    "memory_points": Field(
        3, int, "memory points (student snapshots) before each review point", check=_at_least_one
    ),
    "review_weight": Field(1.0, float, "weight of the review loss on review epochs", check=non_negative),
    "attention_norm": Field(
        "flat",
        str,
        "attention-map normalisation: flat (whole map) or height (reference)",
        choices=ATTENTION_NORMS,
    ),
    "branches": Field(3, int, "feature maps f0, f1, ... reviewed (one ConvLSTM each)", check=_at_least_one),
    "hidden_channels": Field(
        None,
        list,
        "ConvLSTM width per branch (default: 64 where its state is >= 16 a side, else 32)",
        nullable=True,
        item=int,
        check=_widths,
    ),
    "peephole": Field(False, bool, "trainable ConvLSTM peepholes (the reference's stay zero)"),
    "snapshot_bn": Field(
        "batch",
        str,
        "BatchNorm of the snapshots: batch statistics (reference) or running",
        choices=("batch", "running"),
    ),
    "student_features": Field(
        "feats", str, "student maps: post-activation (reference) or preact", choices=FEATURE_KEYS
    ),
    "teacher_features": Field(
        "preact_feats", str, "teacher maps: preact (reference) or post-activation", choices=FEATURE_KEYS
    ),
    "input_size": Field(
        32, int, "image side used to read the student's feature-map sizes", check=_at_least_one
    ),
    "backend": Field(
        "auto", str, "ConvLSTM gate-op backend", choices=("auto", "cpu", "cuda", "triton", "reference")
    ),
}


@dataclass(frozen=True)
class ReviewSchedule:
    """Memory/review points as a fraction of the run.

    A point every ``period_epochs(num_epochs) = max(1, round(period * num_epochs))`` epochs (or
    every ``absolute`` epochs when given),
    starting at epoch 0; point k is memory point ``k mod (memory_points + 1)`` or, when that equals
    memory_points, a review point. Other epochs are general (CE + KD only).
    """

    period: float
    memory_points: int = 3
    absolute: int | None = None

    def period_epochs(self, num_epochs: int) -> int:
        """Epochs between points: ``absolute`` when set, else the fraction ``period`` of the run."""
        if self.absolute is not None:
            return self.absolute
        return max(1, round(self.period * num_epochs))

    def phase(self, epoch: int, num_epochs: int) -> tuple[str, int]:
        """("memory", order) | ("review", -1) | ("general", -1) for a 0-based epoch."""
        every = self.period_epochs(num_epochs)
        if epoch % every:
            return "general", -1
        k = (epoch // every) % (self.memory_points + 1)
        return ("review", -1) if k == self.memory_points else ("memory", k)

    def review_epochs(self, num_epochs: int) -> list[int]:
        return [e for e in range(num_epochs) if self.phase(e, num_epochs)[0] == "review"]


def _feature_shapes(model: nn.Module, key: str, size: int, who: str) -> list[tuple[int, ...]]:
    """Shapes (C, H, W) of ``model``'s ``key`` maps for one size x size image (eval mode, no grad)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, 3, size, size, device=device, dtype=dtype), with_features=True)
    except TypeError as exc:
        raise DistillerSetupError(
            f"{who}: tskd needs a model called as model(x, with_features=True) -> (logits, FeatureDict) "
            f"(the tskd_fast model zoo's API); calling it failed: {exc}"
        ) from None
    finally:
        model.train(was_training)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping) and key in out[1]):
        raise DistillerSetupError(
            f"{who}: model(x, with_features=True) must return (logits, FeatureDict with {key!r})"
        )
    maps = out[1][key]
    shapes = []
    for i, f in enumerate(maps):
        if not isinstance(f, Tensor) or f.dim() != 4:
            raise DistillerSetupError(
                f"{who}: feature {key}[{i}] is not a (B, C, H, W) map: {getattr(f, 'shape', f)}"
            )
        shapes.append(tuple(f.shape[1:]))
    return shapes


class TSKDDistiller(Distiller):
    """CE + KD every epoch, plus the ConvLSTM review loss on review epochs (module docstring)."""

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
        nb = opts["branches"]
        s_shapes = _feature_shapes(student, opts["student_features"], opts["input_size"], "student")
        t_shapes = _feature_shapes(teacher, opts["teacher_features"], opts["input_size"], "teacher")
        for who, shapes, key in (
            ("student", s_shapes, opts["student_features"]),
            ("teacher", t_shapes, opts["teacher_features"]),
        ):
            if len(shapes) < nb:
                raise DistillerSetupError(
                    f"{who}: tskd reviews {nb} feature maps (distiller.tskd.branches) but the model gives only "
                    f"{len(shapes)} {key} maps"
                )
        map_sizes = [s[1:] for s in s_shapes[:nb]]
        widths = opts["hidden_channels"]
        if widths is not None and len(widths) != nb:
            raise DistillerSetupError(
                f"distiller.tskd.hidden_channels must give one width per branch ({nb}), got {widths}"
            )
        self.review = TSKDReview(
            map_sizes,
            hidden_channels=widths,
            peephole=opts["peephole"],
            attention_norm=opts["attention_norm"],
            backend=opts["backend"],
        )
        self.schedule = ReviewSchedule(opts["period"], opts["memory_points"], opts["period_epochs"])
        self.review_weight = float(opts["review_weight"])
        # The snapshots: copies of the student architecture, weights copied in at memory points.
        self.snapshots = nn.ModuleList(copy.deepcopy(student) for _ in range(opts["memory_points"]))
        self.snapshots.requires_grad_(False)
        self.filled = [False] * opts["memory_points"]
        self.phase, self.memory_order, self.reviewing = "general", -1, False
        self._period_epochs: int | None = None

    # -- schedule ---------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self.phase, self.memory_order = self.schedule.phase(epoch, num_epochs)
        self._period_epochs = self.schedule.period_epochs(num_epochs)
        self.reviewing = self.phase == "review" and all(self.filled)
        if not self.reviewing:
            for p in unwrap(self.review).parameters():
                p.grad = None

    def on_epoch_end(self, epoch: int) -> None:
        if self.phase == "memory":
            self.snapshots[self.memory_order].load_state_dict(unwrap(self.student).state_dict())
            self.filled[self.memory_order] = True

    def train(self, mode: bool = True) -> TSKDDistiller:
        super().train(mode)
        if self.options["snapshot_bn"] == "running":
            self.snapshots.eval()
        return self

    # -- the step ---------------------------------------------------------------------------------
    def extra_modules(self) -> dict[str, nn.Module]:
        return {"review": self.review}

    def needs_teacher(self) -> bool:
        return self.reviewing or super().needs_teacher()

    def wants_features(self) -> tuple[bool, bool]:
        want_s, want_t = super().wants_features()
        return want_s or self.reviewing, want_t or self.reviewing

    def method_losses(self, image: Tensor, outputs: StepOutputs) -> dict[str, Tensor]:
        """The review loss on review epochs (weighted), else nothing."""
        if not self.reviewing:
            return {}
        s_feats, t_feats = outputs.student_features, outputs.teacher_features
        assert s_feats is not None and t_feats is not None
        nb = self.options["branches"]
        review = self.review(
            self.snapshot_maps(image),
            s_feats[self.options["student_features"]][:nb],
            t_feats[self.options["teacher_features"]][:nb],
        )
        return {REVIEW_LOSS: review * self.review_weight}

    @torch.no_grad()
    def snapshot_maps(self, image: Tensor) -> list[list[Tensor]]:
        """Per snapshot (time order), its branch attention maps (B, 1, H_b, W_b), without gradient."""
        head = unwrap(self.review)
        key, nb = self.options["student_features"], self.options["branches"]
        return [head.maps(snap(image, with_features=True)[1][key][:nb]) for snap in self.snapshots]

    # -- checkpoint -------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            "snapshots": [snap.state_dict() for snap in self.snapshots],
            "filled": list(self.filled),
            "period_epochs": self._period_epochs,
        }

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        snaps = state.get("snapshots")
        if snaps is None or len(snaps) != len(self.snapshots):
            raise DistillerSetupError(
                f"the checkpoint holds {0 if snaps is None else len(snaps)} tskd snapshots, this run uses "
                f"{len(self.snapshots)} (distiller.tskd.memory_points)"
            )
        for snap, sd in zip(self.snapshots, snaps, strict=True):
            snap.load_state_dict(sd)
        self.filled = [bool(v) for v in state["filled"]]

    def log_values(self) -> dict[str, float]:
        return {**super().log_values(), "tskd_review_epoch": float(self.reviewing)}


register_method(
    MethodEntry(
        name="tskd",
        cls=TSKDDistiller,
        terms={"ce": 1.0, "kd": 1.0},
        needs_teacher=True,
        options=OPTIONS,
        doc="temporal supervised KD: CE + KD, plus a ConvLSTM review of the student's history",
    )
)
