"""The Distiller contract (mdistiller's): ``forward_train(image, target) -> (logits, {name: loss})``.

A Distiller owns the student, the frozen teacher (always in eval mode, run under no_grad) and the
weighted loss terms of the config. Methods with more machinery subclass it and use the hooks:

* ``extra_modules()``: trainable modules besides the student (adapters, ConvLSTMs, augmentation
  modules); they are optimised with the student, wrapped in DDP like it, and checkpointed.
* ``param_groups()``: optimiser parameter groups (e.g. a different lr for adapters).
* ``on_epoch_start(epoch, num_epochs)`` / ``on_epoch_end(epoch)``: schedules such as a loss
  warmup ``min(1, epoch / warmup)`` (set ``term_factors``) or review epochs.
* ``extra_state()`` / ``load_extra_state(state)``: state that is not a module parameter (student
  snapshots, a method's own optimiser) so that ``--resume`` continues exactly.
* ``run_extras(image, outputs)``: compute method outputs (e.g. adapter features) handed to the terms.
* ``bind_run(info)``: what the run looks like (device, autocast dtype, data normalisation, folder).
* ``step_inputs(image, target)``: random draws that choose what a step computes, made before the
  traced part of a compiled step (tskd_fast.engine.compile) and passed to ``forward_train``.
* Extra phases (TST's augmentation search): ``phase_passes(epoch, num_epochs)`` passes over the
  training data run before that training epoch, each a sequence of ``phase_step(image, target,
  epoch, index)`` calls between ``on_phase_pass_start`` and ``on_phase_pass_end``; the trainer
  checkpoints after every pass, so ``--resume`` continues inside a phase.

The loss weights times ``term_factors`` reach the step as a tensor (``loss_scales``), and a term
reads ``outputs.epoch`` / ``outputs.progress`` from a StepClock: a compiled step then needs no
recompilation when a schedule moves on. Decisions taken in ``on_epoch_start`` that change which
code runs (TSKD's review epochs) compile one graph per outcome.

This module is the bottom of the package: the loss-term contract (``LossTerm``, ``StepOutputs``,
``StepClock``) lives here too, and it imports no other distillers module. Methods are built
through ``registry`` (``build_method``), which merges and checks their options and checks the
teacher before a constructor runs, so a constructor receives a complete options section.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tskd_fast.errors import ConfigError
from tskd_fast.models import FeatureDict

# How the frozen teacher's BatchNorm layers run in training steps (``Distiller.teacher_bn_mode``).
TEACHER_BN_MODES = ("eval", "train")


class DistillerSetupError(ConfigError, ValueError):
    """Bad method options, or a student/teacher a method cannot use: a ValueError for Python
    callers, a one-line error (exit code 2) on the command line."""


class StepClock:
    """Where a training step is in the run: ``epoch`` (0-based) and ``progress`` (the fraction of
    training done, in [0, 1)). A compiled step (tskd_fast.engine.compile) hands the traced code
    this object rather than the two numbers, so the trace reads (and recompiles on) them only
    where a loss term actually uses them."""

    def __init__(self, epoch: int = 0, progress: float = 0.0) -> None:
        self.epoch = epoch
        self.progress = progress


class StepOutputs:
    """What one training step produced, handed to every loss term.

    student_logits: (B, K); teacher_logits: (B, K) or None (no term needs the teacher);
    target: (B,) int64; student_features / teacher_features: the models' FeatureDict when a term
    asked for them, else None; extras: outputs of the distiller's own modules (adapters, ...);
    epoch: 0-based epoch; progress: fraction of training done, in [0, 1) (both read from
    ``clock``, a StepClock made from ``epoch`` and ``progress`` when not given).
    """

    def __init__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None,
        target: Tensor,
        student_features: FeatureDict | None = None,
        teacher_features: FeatureDict | None = None,
        extras: dict[str, Any] | None = None,
        epoch: int = 0,
        progress: float = 0.0,
        clock: StepClock | None = None,
    ) -> None:
        self.student_logits = student_logits
        self.teacher_logits = teacher_logits
        self.target = target
        self.student_features = student_features
        self.teacher_features = teacher_features
        self.extras = extras
        self.clock = clock if clock is not None else StepClock(epoch, progress)

    @property
    def epoch(self) -> int:
        return self.clock.epoch

    @property
    def progress(self) -> float:
        return self.clock.progress


class LossTerm(nn.Module):
    """Base class of a weighted loss: ``forward(outputs: StepOutputs) -> scalar loss`` (unweighted).

    The class attributes say what the term reads, so a distiller runs only the forward passes its
    active terms use.
    """

    needs_teacher: bool = False
    needs_student_features: bool = False
    needs_teacher_features: bool = False

    def forward(self, outputs: StepOutputs) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class RunInfo:
    """What the trainer tells a distiller about the run before training (``bind_run``).

    run_dir: the run folder on the process that writes files (rank 0), None on the others;
    amp_dtype: the autocast dtype of the training steps (None: full precision);
    mean / std: per-channel normalisation of the training images in [0, 1] units, when known.
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    run_dir: str | None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    world_size: int = 1


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or similar ``.module``) wrapper."""
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module


class Distiller(nn.Module):
    """Student + frozen teacher + weighted loss terms.

    Args:
        student: the model being trained; ``student(x)`` -> logits (B, K),
            ``student(x, with_features=True)`` -> (logits, FeatureDict).
        teacher: a trained model with the same API, or None for methods without one (vanilla).
        terms: name -> (weight, LossTerm); terms with weight 0 should not be passed.
        options: the method's own options section (``distiller.<method>``), possibly empty.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        terms: Mapping[str, tuple[float, LossTerm]],
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a distiller needs at least one loss term with a non-zero weight")
        self.student = student
        self.teacher = teacher
        self.terms = nn.ModuleDict({name: term for name, (_, term) in terms.items()})
        self.weights = {name: float(weight) for name, (weight, _) in terms.items()}
        # Per-epoch multipliers of the weights, set by schedules in on_epoch_start.
        self.term_factors = dict.fromkeys(self.weights, 1.0)
        # weight * factor of each term as a tensor, which the step multiplies by: a compiled step
        # then reads the schedule as data instead of recompiling when a factor changes.
        self.register_buffer("_loss_scales", torch.ones(len(self.weights)), persistent=False)
        self._scales_written: list[float] = [1.0] * len(self.weights)
        self.options = dict(options or {})
        if any(term.needs_teacher for term in self.terms.values()) and teacher is None:
            raise ValueError(f"the loss terms {list(self.weights)} need a teacher, but none was given")
        self.teacher_bn_mode = "eval"
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()

    def set_teacher_bn_mode(self, mode: str) -> None:
        """How the teacher's BatchNorm layers run in training steps.

        "eval" (default): with their running statistics, the teacher fully in eval mode.
        "train": with the statistics of each batch, as the official CIFAR code of ReviewKD and TSKD
        runs its teacher; unlike there, the running statistics (and ``num_batches_tracked``) never
        change, so the teacher evaluates as it was loaded. Other layers (dropout) stay in eval mode.
        """
        if mode not in TEACHER_BN_MODES:
            raise DistillerSetupError(
                f"teacher.bn_mode must be one of {', '.join(TEACHER_BN_MODES)}, got {mode!r}"
            )
        self.teacher_bn_mode = mode
        if self.teacher is not None:
            for module in self.teacher.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    # Not tracking: a BatchNorm in train mode then normalises with the batch's
                    # statistics and leaves its buffers alone; in eval mode it still uses them.
                    module.track_running_stats = mode == "eval"
        self.train(self.training)

    # -- the contract ----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Distiller:
        """Train/eval mode for the student and extra modules; the teacher stays in eval mode (in
        training with its BatchNorm layers in train mode when ``teacher_bn_mode`` is "train")."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
            if mode and self.teacher_bn_mode == "train":
                for module in self.teacher.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.train()
        return self

    def needs_teacher(self) -> bool:
        return any(t.needs_teacher or t.needs_teacher_features for t in self.terms.values())

    def forward_train(
        self,
        image: Tensor,
        target: Tensor,
        epoch: int = 0,
        progress: float = 0.0,
        clock: StepClock | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """image (B, 3, H, W), target (B,) -> (student logits (B, K), {term name: weighted loss}).

        The losses are already multiplied by their weights (and schedule factors); the trainer
        back-propagates their sum. ``clock`` (a StepClock) stands for ``epoch`` and ``progress``
        when given (compiled steps pass it); ``kwargs`` are what ``step_inputs`` returned.
        """
        want_s, want_t = self.wants_features()
        s_out = self.student(image, with_features=True) if want_s else self.student(image)
        s_logits, s_feats = s_out if want_s else (s_out, None)
        t_logits, t_feats = None, None
        if self.teacher is not None and self.needs_teacher():
            with torch.no_grad():
                t_out = self.teacher(image, with_features=True) if want_t else self.teacher(image)
            t_logits, t_feats = t_out if want_t else (t_out, None)
        outputs = StepOutputs(
            student_logits=s_logits,
            teacher_logits=t_logits,
            target=target,
            student_features=s_feats,
            teacher_features=t_feats,
            epoch=epoch,
            progress=progress,
            clock=clock,
        )
        outputs.extras = self.run_extras(image, outputs)
        scales = self.loss_scales()
        losses = {name: term(outputs) * scales[i] for i, (name, term) in enumerate(self.terms.items())}
        losses.update(self.method_losses(image, outputs))
        return s_logits, losses

    def loss_scales(self) -> Tensor:
        """weight * term_factors of every term (in ``terms`` order), (n_terms,) float32 on the
        distiller's device. Eager calls first write factors that changed since the last call (a
        fill per changed value, no host read); traced code only reads the tensor, so a compiled
        step calls this before its traced part (tskd_fast.engine.compile)."""
        if not torch.compiler.is_compiling():
            for i, name in enumerate(self.weights):
                value = self.weights[name] * self.term_factors[name]
                if value != self._scales_written[i]:
                    self._loss_scales[i].fill_(value)
                    self._scales_written[i] = value
        return self._loss_scales

    def step_inputs(self, image: Tensor, target: Tensor) -> dict[str, Any]:
        """Keyword arguments of ``forward_train`` decided outside the traced part of a compiled step:
        random draws and other choices whose values pick the code path (TST's augmentation draw).
        ``forward_train`` makes them itself when they are not given; a compiled step gets them
        here first, so the traced code has no such branch and no host read. None by default."""
        return {}

    def wants_features(self) -> tuple[bool, bool]:
        """Whether this step needs the (student, teacher) features: by default, whether a term does."""
        return (
            any(t.needs_student_features for t in self.terms.values()),
            any(t.needs_teacher_features for t in self.terms.values()),
        )

    def method_losses(self, image: Tensor, outputs: StepOutputs) -> dict[str, Tensor]:
        """The method's own weighted losses besides its terms' (TSKD's review loss); none by default."""
        return {}

    def forward_test(self, image: Tensor) -> Tensor:
        """image (B, 3, H, W) -> student logits (B, K)."""
        return self.eval_model()(image)

    def eval_model(self) -> nn.Module:
        """The module evaluated on the test split: the unwrapped student (never DDP, so ranks may
        evaluate different numbers of batches without collective calls)."""
        return unwrap(self.student)

    def forward(self, image: Tensor, target: Tensor | None = None, **kwargs: Any) -> Any:
        if self.training:
            if target is None:
                raise ValueError("forward_train needs the target labels")
            return self.forward_train(image, target, **kwargs)
        return self.forward_test(image)

    # -- hooks for methods with more machinery ----------------------------------------------------
    def run_extras(self, image: Tensor, outputs: StepOutputs) -> dict[str, Any]:
        """Outputs of the method's own modules for the loss terms; none by default."""
        return {}

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules besides the student, by attribute name."""
        return {}

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The student and every extra trainable module (unwrapped), by attribute name."""
        return {"student": unwrap(self.student), **{k: unwrap(m) for k, m in self.extra_modules().items()}}

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups; the trainer fills in lr/weight_decay where a group has none.

        A group may carry ``lr_scale`` (multiplies the configured lr).
        """
        params = [p for m in self.trainable_modules().values() for p in m.parameters() if p.requires_grad]
        return [{"params": params}]

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Called before each epoch (0-based) of training, also after a resume."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch, before evaluation and the checkpoint."""

    def bind_run(self, info: RunInfo) -> None:
        """Called once by the trainer after the modules moved to the device and before training."""

    def phase_passes(self, epoch: int, num_epochs: int) -> int:
        """Passes over the training data to run before training epoch ``epoch`` (0-based) in which
        only the method's own modules learn (e.g. TST's augmentation search); none by default."""
        return 0

    def on_phase_pass_start(self, epoch: int, index: int, passes: int) -> None:
        """Called before pass ``index`` (0-based) of the ``passes`` before epoch ``epoch``."""

    def phase_step(self, image: Tensor, target: Tensor, epoch: int, index: int) -> dict[str, Tensor]:
        """One step of a phase pass: update the method's own modules (forward, backward, optimiser
        step) and return detached scalars to average over the pass (e.g. {"loss": ...})."""
        raise NotImplementedError(f"{type(self).__name__} asked for phase passes but has no phase_step")

    def on_phase_pass_end(
        self, epoch: int, index: int, passes: int, means: dict[str, float]
    ) -> dict[str, float]:
        """Called after a pass with the means of ``phase_step``'s values over every process; returns
        more values to log for the pass (e.g. the learning rate)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state to checkpoint (tensors, numbers, strings, nested dicts/lists)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``extra_state`` returned."""

    def log_values(self) -> dict[str, float]:
        """Scalars worth logging after a step (e.g. the mean DTD temperature)."""
        values = {}
        for name, term in self.terms.items():
            tau = getattr(term, "last_mean_temperature", None)
            if tau is not None:
                values[f"{name}_temperature"] = tau
        return values

    # -- checkpoint / distributed plumbing --------------------------------------------------------
    def wrap_trainable(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Replace the student and every extra module by ``wrap(module)`` (e.g. DDP); not the teacher."""
        self.student = wrap(self.student)
        for name, module in self.extra_modules().items():
            setattr(self, name, wrap(module))

    def checkpoint_state(self) -> dict[str, Any]:
        """{"modules": {name: state_dict} of the trainable modules, "extra": extra_state()}."""
        return {
            "modules": {name: m.state_dict() for name, m in self.trainable_modules().items()},
            "extra": self.extra_state(),
        }

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of ``checkpoint_state`` (strict: every trainable module must be present)."""
        modules = self.trainable_modules()
        missing = [k for k in modules if k not in state["modules"]]
        if missing:
            raise ValueError(f"checkpoint lacks the state of the distiller modules {missing}")
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        self.load_extra_state(state.get("extra", {}))
