"""``tst``: "Teaching What You Should Teach" (Shao et al., IJCAI 2023): a learned augmentation
module searches for samples the teacher still handles and the student does not, and the student
trains on them.

* The module (tskd_fast.nn.LearnedAugmentation) is applied, without gradient, in every student
  step from the first epoch: the loader batch of B images is completed by B augmented copies, so
  the student and teacher see 2B images per step (the reference's layout: its loader batch is half
  its ``train_batch_size``). The loss terms are averaged over the 2B rows, which is the reference's
  ½ KD(x̃) + ½ KD(x); with ``kd`` that is CE + KD, with ``distiller.terms.dtd_ka`` the fused DTD+KA
  loss. Augmented images keep their labels. The training accuracy counts the original half.
* Search phases: before the training epochs round(f * epochs) for f in ``search_at`` (the
  reference's epochs 30 and 90 of 240 on CIFAR: 0.125 and 0.375; or the epochs ``search_epochs``),
  max(1, round(search_length * epochs)) passes over the training set (the reference's 30 of 240:
  0.125; or ``search_passes``) update only the module, with student (in eval mode) and teacher
  frozen, minimising the teacher's CE on x̃ plus -log(1 - p_S(y | x̃)) (``objective: confidence``,
  what the reference's code computes: its ``criticion`` ignores the ``criticion_type`` of its config
  files) or minus the student's CE (``ce_difference``, what ``NO_CONFIDENCE`` selected in the
  reference's revisions before November 8, 2022); docs/methods.md §4.2, §4.5. The module has its own
  SGD (lr 0.01, momentum 0.9; the gradient norm clipped at 10, ``search_grad_clip: 0`` as the
  reference) and the reference's plateau rule: after a pass whose loss fell by less than 0.02 both
  absolutely and relatively, lr *= 0.9. Optimiser and plateau rule start afresh with each phase; the
  module's parameters carry over.
* The module, its optimiser, GradScaler and plateau state and its random generator are
  checkpointed; the trainer saves after every search pass, so ``--resume`` continues a phase exactly.
* Logged: each op's apply probability and magnitude (fraction of its range) every epoch
  (``tst_p_<op>``, ``tst_m_<op>`` in log.csv and TensorBoard), the search loss per pass
  (phase_log.csv), and a grid of original (top row) and augmented (bottom row) training images in
  the run folder after each phase (``tst_search_before_epoch_<n>.png``).

Departures from the reference, each one key away from it: differentiable ops instead of pretrained
surrogate networks (no key: the surrogates are not reproduced); the relaxed Bernoulli takes the
learned logits (``apply_logit: sigmoid`` feeds it sigmoid(θ) as the reference does, so an op's apply
rate stays between 0.5 and 0.73 and no op is ever switched off); signed ops get a random sign per
batch (``signed_magnitudes: false``: always positive, as the reference's surrogates in use); the
module's gradient norm is clipped at 10 (``search_grad_clip: 0``: unclipped, as the reference);
default weights CE 0.1 + KD 0.9 like ``kd`` (the reference: 1 + 1, ``distiller.terms.ce=1
distiller.terms.kd=1``). The CIFAR-100 configs set every reference key (docs/methods.md §4.5).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tskd_fast.distillers.terms  # noqa: F401  (registers the ce and kd terms weighed here)
from tskd_fast.distillers.base import Distiller, LossTerm, RunInfo, unwrap
from tskd_fast.distillers.registry import MethodEntry, register_method
from tskd_fast.errors import ConfigError
from tskd_fast.nn.augment import ALL_OPS, APPLY_LOGITS, CIFAR100_MEAN, CIFAR100_STD, LearnedAugmentation
from tskd_fast.schema import Field, Section, non_negative, positive, unit_interval

OBJECTIVES = ("confidence", "ce_difference")


def search_objective(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, kind: str = "confidence"
) -> tuple[Tensor, Tensor, Tensor]:
    """The module's loss on augmented images: (loss, teacher CE, student term), scalars.

    student_logits, teacher_logits: (B, K) float; target: (B,) int64. ``confidence``: teacher CE +
    mean -log(1 - p_S(y)), computed as logsumexp(z) - logsumexp_{k != y}(z) (exact where the
    reference's log(1 - p + 1e-8) clips); ``ce_difference``: teacher CE - student CE.
    """
    if kind not in OBJECTIVES:
        raise ValueError(f"kind must be one of {OBJECTIVES}, got {kind!r}")
    teacher_ce = F.cross_entropy(teacher_logits, target)
    if kind == "confidence":
        others = student_logits.scatter(1, target[:, None], float("-inf"))
        student_term = (torch.logsumexp(student_logits, 1) - torch.logsumexp(others, 1)).mean()
    else:
        student_term = -F.cross_entropy(student_logits, target)
    return teacher_ce + student_term, teacher_ce, student_term


def _ops_check(value: Any) -> str | None:
    unknown = [op for op in value or [] if op not in ALL_OPS]
    if unknown:
        return f"unknown ops {unknown}; valid ops: {', '.join(ALL_OPS)}"
    return None if value else "must list at least one op"


def _epochs_check(value: Any) -> str | None:
    bad = [e for e in value or [] if e < 0]
    return f"epochs are 0-based and must be >= 0, got {bad}" if bad else None


def _fractions_check(value: Any) -> str | None:
    bad = [f for f in value or [] if not 0.0 <= f < 1.0]
    return f"fractions of the run must be in [0, 1), got {bad}" if bad else None


OPTIONS: Section = {
    "ops": Field(list(ALL_OPS), list, "augmentation ops the module chooses from", item=str, check=_ops_check),
    "num_ops": Field(4, int, "ops applied per batch (drawn without replacement)", check=positive),
    "temperature": Field(
        0.05, float, "relaxed-Bernoulli temperature of the apply probabilities", check=positive
    ),
    "cutout_size": Field(
        None, int, "cutout window side in pixels (null: the image side)", nullable=True, check=positive
    ),
    "search_at": Field(
        [0.125, 0.375],
        list,
        "search phases before these fractions of the run (epoch = round(f * epochs))",
        item=float,
        check=_fractions_check,
    ),
    "search_length": Field(
        0.125, float, "passes per search phase as a fraction of solver.epochs (at least 1)", check=positive
    ),
    "search_epochs": Field(
        None,
        list,
        "the search phases before these (0-based) epochs instead (the reference: [30, 90]); null: use search_at",
        nullable=True,
        item=int,
        check=_epochs_check,
    ),
    "search_passes": Field(
        None,
        int,
        "passes per search phase instead (the reference: 30); null: use search_length",
        nullable=True,
        check=positive,
    ),
    "search_lr": Field(0.01, float, "SGD lr of the module (reset each phase)", check=positive),
    "search_momentum": Field(0.9, float, "SGD momentum of the module", check=non_negative),
    "search_grad_clip": Field(10.0, float, "gradient-norm clip of the module (0: off)", check=non_negative),
    "plateau_threshold": Field(
        0.02,
        float,
        "a pass whose loss fell by less than this (absolutely and relatively) is a plateau",
        check=non_negative,
    ),
    "plateau_decay": Field(
        0.9, float, "the module's lr is multiplied by this after a plateau", check=unit_interval
    ),
    "apply_logit": Field(
        "learned",
        str,
        "relaxed-Bernoulli logit of an op: the learned value (exact) or sigmoid of it (the reference: the "
        "apply rate stays in (0.5, 0.73))",
        choices=APPLY_LOGITS,
    ),
    "signed_magnitudes": Field(
        True, bool, "signed ops get a random sign per batch (false: always positive, the reference)"
    ),
    "objective": Field(
        "confidence", str, "module loss: teacher CE + -log(1 - p_student) or - student CE", choices=OBJECTIVES
    ),
    "mean": Field(
        None, list, "per-channel mean of the inputs (null: the training set's)", nullable=True, item=float
    ),
    "std": Field(
        None, list, "per-channel std of the inputs (null: the training set's)", nullable=True, item=float
    ),
    "grid_samples": Field(
        8, int, "images in the grid saved after each search phase (0: none)", check=non_negative
    ),
}


class TSTDistiller(Distiller):
    """KD on original + learned-augmented batches, with search phases for the augmentation module."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        terms: Mapping[str, tuple[float, LossTerm]],
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(student, teacher, terms, options)
        assert teacher is not None, "registry.build_method checks the teacher"
        o = self.options
        try:
            self.augment = LearnedAugmentation(
                ops=o["ops"],
                num_ops=o["num_ops"],
                mean=o["mean"] or CIFAR100_MEAN,
                std=o["std"] or CIFAR100_STD,
                temperature=o["temperature"],
                cutout_size=o["cutout_size"],
                apply_logit=o["apply_logit"],
                signed=o["signed_magnitudes"],
            )
        except ValueError as exc:
            raise ConfigError(f"distiller.tst: {exc}") from None
        self.augment.requires_grad_(True)
        self.search_optimizer = self._new_optimizer()
        self.search_scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.plateau_last: float | None = None
        self._info: RunInfo | None = None
        self._pending: dict[str, Any] | None = None
        self._phase: tuple[int, int, int] = (0, 0, 0)
        self._grid_images: Tensor | None = None

    # -- set-up -----------------------------------------------------------------------------------
    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            self.augment.parameters(), lr=self.options["search_lr"], momentum=self.options["search_momentum"]
        )

    def bind_run(self, info: RunInfo) -> None:
        self._info = info
        o = self.options
        mean, std = o["mean"] or info.mean, o["std"] or info.std
        if mean is None or std is None:
            raise ConfigError(
                "distiller.tst.mean / distiller.tst.std: the training set does not say how it normalises its "
                "images; set both (per-channel lists in [0, 1] units)"
            )
        try:
            self.augment.set_normalisation(mean, std)
        except ValueError as exc:
            raise ConfigError(f"distiller.tst: {exc}") from None
        self.search_scaler = torch.amp.GradScaler(info.device.type, enabled=info.amp_dtype == torch.float16)
        if self._pending is not None:
            self._load_search_state(self._pending)
            self._pending = None

    # -- the student step -------------------------------------------------------------------------
    def step_inputs(self, image: Tensor, target: Tensor) -> dict[str, Any]:
        """The augmentation's draw for this step, packed on the image's device (see forward_train)."""
        return {"augment_draw": self.augment.draw().packed(image.device)}

    def forward_train(
        self,
        image: Tensor,
        target: Tensor,
        epoch: int = 0,
        progress: float = 0.0,
        augment_draw: Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """image (B, 3, H, W), target (B,) -> (student logits of the original half (B, K), losses
        averaged over the B original and B augmented images).

        augment_draw: the module's draw made beforehand (``step_inputs``, as a compiled step does):
        every op is computed and weighted by the draw, with no branch on it; without it the module
        draws here and runs the chosen ops only. Both consume one draw of the module's generator.
        """
        with torch.no_grad():
            if augment_draw is None:
                augmented = self.augment(image)
            else:
                augmented = self.augment.forward_packed(image, augment_draw)
            augmented = augmented.to(image.dtype)
        both = torch.cat([image, augmented])
        if (
            image.dim() == 4
            and not image.is_contiguous()
            and image.is_contiguous(memory_format=torch.channels_last)
        ):
            both = both.contiguous(memory_format=torch.channels_last)
        logits, losses = super().forward_train(both, torch.cat([target, target]), epoch, progress, **kwargs)
        return logits[: image.shape[0]], losses

    # -- search phases ----------------------------------------------------------------------------
    def search_epochs(self, num_epochs: int) -> list[int]:
        """The (0-based) epochs preceded by a search phase: ``search_epochs`` when set, else the
        fractions ``search_at`` of the run (epochs past the run are dropped / clipped to its last)."""
        absolute = self.options["search_epochs"]
        if absolute is not None:
            return sorted({e for e in absolute if e < num_epochs})
        return sorted({min(num_epochs - 1, round(f * num_epochs)) for f in self.options["search_at"]})

    def search_passes(self, num_epochs: int) -> int:
        """Passes per search phase: ``search_passes`` when set, else the fraction ``search_length``
        of the run's epochs (at least 1)."""
        absolute = self.options["search_passes"]
        if absolute is not None:
            return int(absolute)
        return max(1, round(self.options["search_length"] * num_epochs))

    def phase_passes(self, epoch: int, num_epochs: int) -> int:
        return self.search_passes(num_epochs) if epoch in self.search_epochs(num_epochs) else 0

    def on_phase_pass_start(self, epoch: int, index: int, passes: int) -> None:
        self._phase = (epoch, index, passes)
        if index == 0:
            # As the reference: a fresh optimiser and plateau rule per phase; the module is kept.
            self.search_optimizer = self._new_optimizer()
            self.plateau_last = None
            if self._info is not None:
                self.search_scaler = torch.amp.GradScaler(
                    self._info.device.type, enabled=self._info.amp_dtype == torch.float16
                )
        self._grid_images = None

    def phase_step(self, image: Tensor, target: Tensor, epoch: int, index: int) -> dict[str, Tensor]:
        """One module update on a batch: image (B, 3, H, W) normalised, target (B,)."""
        student, teacher = unwrap(self.student), self.teacher
        assert teacher is not None
        device = image.device
        dtype = self._info.amp_dtype if self._info is not None else None
        was_training = student.training
        flags = [p.requires_grad for p in student.parameters()]
        student.eval()
        student.requires_grad_(False)
        try:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                augmented = self.augment(image)
                s_logits, t_logits = student(augmented), teacher(augmented)
            loss, teacher_ce, student_term = search_objective(
                s_logits.float(), t_logits.float(), target, self.options["objective"]
            )
            opt, scaler = self.search_optimizer, self.search_scaler
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            self._average_gradients()
            scaler.unscale_(opt)
            if self.options["search_grad_clip"] > 0:
                nn.utils.clip_grad_norm_(self.augment.parameters(), self.options["search_grad_clip"])
            scaler.step(opt)
            scaler.update()
        finally:
            for p, flag in zip(student.parameters(), flags):
                p.requires_grad_(flag)
            student.train(was_training)
        _, _, passes = self._phase
        if index == passes - 1 and self._grid_images is None and self.options["grid_samples"] > 0:
            self._grid_images = image[: self.options["grid_samples"]].detach().clone()
        return {
            "loss": loss.detach(),
            "teacher_ce": teacher_ce.detach(),
            "student_term": student_term.detach(),
        }

    def _average_gradients(self) -> None:
        """Average the module's gradients over processes (the module is not wrapped in DDP)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        for p in self.augment.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()

    def on_phase_pass_end(
        self, epoch: int, index: int, passes: int, means: dict[str, float]
    ) -> dict[str, float]:
        lr = self.search_optimizer.param_groups[0]["lr"]
        loss, last = means["loss"], self.plateau_last
        threshold = self.options["plateau_threshold"]
        if last is not None:
            drop = last - loss
            if drop < threshold and abs(drop / (last - 1e-6)) < threshold:
                for group in self.search_optimizer.param_groups:
                    group["lr"] *= self.options["plateau_decay"]
        self.plateau_last = loss
        if index == passes - 1:
            self._save_grid(epoch)
        return {"lr": lr}

    @torch.no_grad()
    def _save_grid(self, epoch: int) -> None:
        info, images = self._info, self._grid_images
        self._grid_images = None
        if info is None or info.run_dir is None or images is None:
            return
        from torchvision.utils import save_image

        # A generator of its own: drawing the picture must not change the training's random stream.
        augmented = self.augment(images, generator=torch.Generator().manual_seed(epoch))
        mean = self.augment.mean.view(1, -1, 1, 1).to(images.device)
        std = self.augment.std.view(1, -1, 1, 1).to(images.device)
        pixels = (torch.cat([images, augmented]).float() * std + mean).clamp(0.0, 1.0)
        path = os.path.join(info.run_dir, f"tst_search_before_epoch_{epoch + 1}.png")
        save_image(pixels.cpu(), path, nrow=images.shape[0], padding=1)

    # -- logging and checkpoints ------------------------------------------------------------------
    def log_values(self) -> dict[str, float]:
        values = super().log_values()
        for op, learned in self.augment.summary().items():
            values[f"tst_p_{op}"] = learned["p"]
            if "m" in learned:
                values[f"tst_m_{op}"] = learned["m"]
        return values

    def extra_state(self) -> dict[str, Any]:
        return {
            "augment": self.augment.state_dict(),
            "search_optimizer": self.search_optimizer.state_dict(),
            "search_scaler": self.search_scaler.state_dict(),
            "plateau_last": self.plateau_last,
        }

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        if "augment" not in state:
            raise ValueError("checkpoint lacks the state of tst's augmentation module")
        self.augment.load_state_dict(state["augment"])
        if self._info is None:
            # The optimiser state must land on the device of the parameters: wait for bind_run.
            self._pending = dict(state)
        else:
            self._load_search_state(state)

    def _load_search_state(self, state: Mapping[str, Any]) -> None:
        self.search_optimizer.load_state_dict(state["search_optimizer"])
        if state.get("search_scaler"):
            self.search_scaler.load_state_dict(state["search_scaler"])
        self.plateau_last = state.get("plateau_last")


register_method(
    MethodEntry(
        name="tst",
        cls=TSTDistiller,
        terms={"ce": 0.1, "kd": 0.9},
        needs_teacher=True,
        options=OPTIONS,
        doc="KD on original + learned-augmented batches; search phases fit the augmentation (TST)",
    )
)
