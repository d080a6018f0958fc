"""torch.compile of training: ``trainer.compile`` (the student's step) and ``teacher.compile``.

``trainer.compile: false | default | reduce-overhead | max-autotune`` compiles the student's step:
``distiller.forward_train`` with its loss terms, the method's own modules (ABF stack and HCL,
ConvLSTM review, TST augmentation) and the teacher's forward inside it, into one graph; its backward
is compiled with it. ``reduce-overhead`` adds CUDA graphs on CUDA (on the CPU it is ``default``);
``max-autotune`` also times kernel choices while compiling (slow to compile). The optimiser step,
the data loading and the logging stay eager, and so does evaluation.

``teacher.compile`` (same values) compiles the teacher's own forward (``nn.Module.compile``) where it
runs outside a compiled step: the teacher's evaluation and TST's search phases (inside a compiled
step the teacher is traced with the step anyway).

What stays outside the traced code by design, run eagerly before it each step:

* ``Distiller.loss_scales``: the loss weights times the schedule factors (ReviewKD's warm-up) are
  written into a tensor, which the traced code reads as data (no recompilation per epoch);
* ``Distiller.step_inputs``: random draws that choose what the step computes (TST's augmentation
  draw, packed into a tensor; the traced code computes every op and weighs them by it);
* the epoch and progress reach the loss terms through a ``StepClock``: the trace reads them only
  where a term uses them;
* decisions taken once per epoch in ``on_epoch_start`` stay Python values the graph is specialised
  on: TSKD's review epochs run one graph, its other epochs another (two compilations per run);
* under DDP (torchrun), the forward wrapper of each DDP-wrapped module (its reducer and logger)
  runs eagerly between graphs, as torch designs DDP under torch.compile; the module inside is
  traced, and Dynamo's DDPOptimizer splits its graph at DDP's gradient buckets.

Shapes are static (``dynamic=False``): the training loader drops its last partial batch, so one
batch shape is compiled. The modules are not wrapped, so state dicts, checkpoints and ``--resume``
are those of an eager run (no ``_orig_mod.`` prefix), and DDP wraps the student as usual.

Outside the step, eagerly: the optimiser step, data loading, logging (the DTD temperature, the
progress bar's loss), evaluation (compiled only by ``teacher.compile`` for the teacher) and TST's
search phases.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tskd_fast.distillers.base import StepClock
from tskd_fast.ops.backend import triton_available, triton_interpreting
from tskd_fast.ops.library import define_triton_ops

COMPILE_MODES = ("false", "default", "reduce-overhead", "max-autotune")

StepFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]


def _check_mode(mode: str, name: str) -> None:
    if mode not in COMPILE_MODES:
        raise ValueError(f"{name} must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")


def torch_compile_kwargs(mode: str) -> dict[str, Any]:
    """The torch.compile arguments of a ``trainer.compile`` / ``teacher.compile`` value (not false)."""
    _check_mode(mode, "mode")
    if mode == "false":
        raise ValueError("mode 'false' compiles nothing")
    return {"mode": None if mode == "default" else mode, "dynamic": False}


class CompiledStep:
    """``distiller.forward_train`` compiled with ``mode`` (not "false"), called as the trainer calls
    the eager one: ``step(image, target, epoch=e, progress=p) -> (logits, {term: loss})``.

    Each call runs the untraced prologue eagerly (``loss_scales``, ``step_inputs``), then the
    compiled step. With ``mode="reduce-overhead"`` on CUDA the step's tensors are CUDA-graph
    outputs that the next step overwrites: read what you need from them (losses, accuracy) before
    the next call, as the trainer does. ``fullgraph=True`` raises on any graph break instead of
    running the pieces (the tests use it; the trainer does not, so that a user's own loss term
    with a break still trains). ``backend``: torch.compile's (e.g. "aot_eager" to tell a compiler
    problem from a tracing one).
    """

    def __init__(
        self,
        distiller: nn.Module,
        mode: str = "default",
        *,
        fullgraph: bool = False,
        backend: str | Callable = "inductor",
    ) -> None:
        self.distiller = distiller
        self.mode = mode
        kwargs = torch_compile_kwargs(mode)
        if backend != "inductor":
            kwargs.pop("mode")  # an inductor setting
        self._compiled = torch.compile(_own_copy(traced_step), fullgraph=fullgraph, backend=backend, **kwargs)
        self._prepared = False

    def __call__(
        self, image: Tensor, target: Tensor, epoch: int = 0, progress: float = 0.0
    ) -> tuple[Tensor, dict[str, Tensor]]:
        d = self.distiller
        if not self._prepared:
            _define_ops_for(image.device)
            self._prepared = True
        d.loss_scales()
        inputs = d.step_inputs(image, target)
        if self.mode == "reduce-overhead" and image.is_cuda:
            # The previous step's outputs are consumed: its CUDA-graph memory may be reused.
            torch.compiler.cudagraph_mark_step_begin()
        return self._compiled(d, image, target, StepClock(epoch, progress), inputs)


def _define_ops_for(device: torch.device) -> None:
    """Define the Triton ops before the first trace when they can run on ``device`` (CUDA, or the
    CPU under TRITON_INTERPRET=1): they are defined on first use, which the trace must not be."""
    if triton_available() and (device.type == "cuda" or triton_interpreting()):
        define_triton_ops()


def traced_step(
    distiller: nn.Module, image: Tensor, target: Tensor, clock: StepClock, inputs: dict[str, Any]
) -> tuple[Tensor, dict[str, Tensor]]:
    """The function a CompiledStep compiles (a copy of it): the distiller's step after its untraced
    prologue; ``inputs`` is what ``distiller.step_inputs`` returned. Public for tests and tools that
    trace a step themselves (``torch._dynamo.explain(traced_step)(...)``)."""
    return distiller.forward_train(image, target, clock=clock, **inputs)


def _own_copy(fn: Callable) -> Callable:
    """fn with a code object of its own. torch.compile keeps its compiled graphs, and counts them
    against its recompile limit (8), per code object: every step compiled in one process (a
    job's teacher, student and baseline runs, the bench's methods) would share one count and the
    ninth would silently run eagerly. A copy per CompiledStep gives each its own."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__)


def student_step(distiller: nn.Module, mode: str) -> StepFn:
    """What the trainer calls for a training step under ``trainer.compile=mode``: the distiller's
    own ``forward_train`` for "false", else a CompiledStep."""
    _check_mode(mode, "trainer.compile")
    return distiller.forward_train if mode == "false" else CompiledStep(distiller, mode)


def compile_teacher(teacher: nn.Module | None, mode: str, *, backend: str | Callable = "inductor") -> None:
    """Compile the teacher's forward in place for ``teacher.compile=mode`` (nothing for "false" or
    no teacher). ``nn.Module.compile`` keeps the module and its state-dict keys as they are; inside
    a compiled step the teacher is traced with the step (its own compiled forward is not used)."""
    _check_mode(mode, "teacher.compile")
    if teacher is None or mode == "false":
        return
    kwargs = torch_compile_kwargs(mode)
    if backend != "inductor":
        kwargs.pop("mode")
    teacher.compile(backend=backend, **kwargs)


__all__ = [
    "COMPILE_MODES",
    "CompiledStep",
    "compile_teacher",
    "student_step",
    "torch_compile_kwargs",
    "traced_step",
]
