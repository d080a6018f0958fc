"""The state of a run in its checkpoint, and the files written from it.

``checkpoint.pt`` (after every epoch and every phase pass) holds the distiller's modules and extra
state, the optimiser, scheduler and GradScaler (``Optimisation``), every process's RNG states, and
where the run stands (``TrainState``: epochs done, history, best and teacher accuracy, wall time,
phase passes done). Its ``"model"`` entry is the student's state_dict, so the file also loads as a
teacher checkpoint. Next to it: ``model_best.pth`` on a new best epoch, ``log.csv`` /
``phase_log.csv`` (rewritten from the history, so they always match the checkpoint) and, once the
run is finished, ``model_final.pth`` and ``results.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from tskd_fast.distillers import Distiller, unwrap
from tskd_fast.engine import checkpoint as ckpt
from tskd_fast.engine.config import dump, identity
from tskd_fast.engine.distributed import DistContext
from tskd_fast.engine.logs import write_csv
from tskd_fast.engine.rng import capture_rng


@dataclass
class Optimisation:
    """The optimiser, its per-iteration lr scheduler and the GradScaler of a run."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from a checkpoint (its "optimizer", "scheduler" and "scaler" entries)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    @property
    def lr(self) -> float:
        """The current lr of the first parameter group."""
        return self.optimizer.param_groups[0]["lr"]


@dataclass
class TrainState:
    """Where a run stands.

    epoch: training epochs done; history: one log row per epoch done; best_top1 / teacher_top1:
    test top-1 (%) of the best epoch and of the teacher (None: not measured); wall_s: training
    time of every invocation so far; phase_done: passes of the distiller's extra phase done before
    epoch ``epoch`` (0 after an epoch); phase_history: one log row per phase pass; peak_memory:
    the highest peak memory of the run's invocations in bytes (``peak_memory.PeakMemory``), None
    when unknown.
    """

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_top1: float | None = None
    teacher_top1: float | None = None
    wall_s: float = 0.0
    phase_done: int = 0
    phase_history: list[dict[str, Any]] = field(default_factory=list)
    peak_memory: int | None = None

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> TrainState:
        return cls(
            epoch=int(state["epoch"]),
            history=list(state["history"]),
            best_top1=state.get("best_top1"),
            teacher_top1=state.get("teacher_top1"),
            wall_s=state.get("wall_s", 0.0),
            phase_done=int(state.get("phase_done", 0)),
            phase_history=list(state.get("phase_history", [])),
            peak_memory=state.get("peak_memory"),
        )

    def end_epoch(self, row: dict[str, Any]) -> bool:
        """Record a finished epoch's log row (with its ``test_top1``); True on a new best top-1."""
        self.epoch += 1
        self.phase_done = 0
        self.history.append(row)
        improved = self.best_top1 is None or row["test_top1"] > self.best_top1
        if improved:
            self.best_top1 = row["test_top1"]
        return improved

    def note_peak_memory(self, peak: int | None) -> None:
        """Keep the highest peak seen (``peak`` in bytes, None when unknown)."""
        if peak is not None and (self.peak_memory is None or peak > self.peak_memory):
            self.peak_memory = peak


def gather_rng(ctx: DistContext) -> list[dict[str, Any]]:
    """Every rank's RNG states, collected on rank 0 (others get an empty list); every rank calls it."""
    mine = capture_rng()
    if not ctx.enabled:
        return [mine]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size if ctx.is_main else []
    dist.gather_object(mine, out if ctx.is_main else None, dst=0)
    return out


def save_checkpoint(
    run_dir: str,
    cfg: Mapping[str, Any],
    distiller: Distiller,
    optim: Optimisation,
    run: TrainState,
    rng: list[dict[str, Any]],
    world_size: int,
    improved: bool,
) -> None:
    """Write ``checkpoint.pt`` (and ``model_best.pth`` when ``improved``) atomically, then the logs."""
    dstate = distiller.checkpoint_state()
    state = {
        "format": ckpt.FORMAT,
        "model": dstate["modules"]["student"],
        "arch": cfg["student"]["name"],
        "epoch": run.epoch,
        "epochs": cfg["solver"]["epochs"],
        "config": dict(cfg),
        "identity": identity(cfg),
        "distiller": dstate,
        **optim.state_dict(),
        "rng": rng,
        "history": run.history,
        "best_top1": run.best_top1,
        "teacher_top1": run.teacher_top1,
        "wall_s": run.wall_s,
        "world_size": world_size,
        "phase_done": run.phase_done,
        "phase_history": run.phase_history,
        "peak_memory": run.peak_memory,
    }
    ckpt.atomic_save(state, os.path.join(run_dir, ckpt.CHECKPOINT))
    if improved:
        ckpt.atomic_save(
            {"model": state["model"], "epoch": run.epoch, "arch": state["arch"], "top1": run.best_top1},
            os.path.join(run_dir, ckpt.BEST),
        )
    write_csv(run.history, os.path.join(run_dir, "log.csv"))
    if run.phase_history:
        write_csv(run.phase_history, os.path.join(run_dir, "phase_log.csv"))


def save_final(run_dir: str, cfg: Mapping[str, Any], distiller: Distiller, run: TrainState) -> None:
    """``model_final.pth`` (the student's weights) and ``results.json`` of a finished run."""
    last = run.history[-1] if run.history else {}
    ckpt.atomic_save(
        {
            "model": unwrap(distiller.student).state_dict(),
            "epoch": run.epoch,
            "arch": cfg["student"]["name"],
            "top1": last.get("test_top1"),
        },
        os.path.join(run_dir, ckpt.FINAL),
    )
    results = {
        "model": cfg["student"]["name"],
        "method": cfg["distiller"]["name"],
        "epochs": run.epoch,
        "test_top1": last.get("test_top1"),
        "test_top5": last.get("test_top5"),
        "best_test_top1": max((r["test_top1"] for r in run.history), default=None),
        "teacher_top1": run.teacher_top1,
        "wall_s": run.wall_s,
        "peak_memory_bytes": run.peak_memory,
    }
    ckpt.atomic_text(json.dumps(results, indent=2) + "\n", os.path.join(run_dir, "results.json"))


def write_run_config(cfg: Mapping[str, Any], run_dir: str) -> None:
    """The resolved config, saved next to the checkpoint as config.yaml (rank 0 only)."""
    ckpt.atomic_text(dump(cfg), os.path.join(run_dir, "config.yaml"))


@dataclass
class RunResult:
    """Outcome of one run (the numbers are the test split's, in %)."""

    label: str
    run_dir: str
    model: str
    method: str
    epochs_done: int
    epochs: int
    top1: float | None
    top5: float | None
    best_top1: float | None
    teacher_top1: float | None
    wall_s: float
    reused: bool = False
    peak_memory: int | None = None

    @property
    def seconds_per_epoch(self) -> float | None:
        """Wall time per epoch done (search phases and evaluation included)."""
        return self.wall_s / self.epochs_done if self.epochs_done else None

    @property
    def finished(self) -> bool:
        return self.epochs_done >= self.epochs

    @classmethod
    def from_state(
        cls, label: str, run_dir: str, cfg: Mapping[str, Any], run: TrainState, reused: bool = False
    ) -> RunResult:
        """The result of a run from where it stands (the last epoch's test accuracies)."""
        last = run.history[-1] if run.history else {}
        return cls(
            label=label,
            run_dir=run_dir,
            model=cfg["student"]["name"],
            method=cfg["distiller"]["name"],
            epochs_done=run.epoch,
            epochs=cfg["solver"]["epochs"],
            top1=last.get("test_top1"),
            top5=last.get("test_top5"),
            best_top1=run.best_top1,
            teacher_top1=run.teacher_top1,
            wall_s=run.wall_s,
            reused=reused,
            peak_memory=run.peak_memory,
        )


__all__ = [
    "Optimisation",
    "RunResult",
    "TrainState",
    "gather_rng",
    "save_checkpoint",
    "save_final",
    "write_run_config",
]
