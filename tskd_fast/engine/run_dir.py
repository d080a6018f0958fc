"""Run folders: decide whether a run starts, resumes or is reused, and never clobber another run.

A run folder holds ``config.yaml``, ``checkpoint.pt`` (after every epoch), ``log.csv``, ``tb/``,
``model_best.pth`` and, once finished, ``model_final.pth`` and ``results.json``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tskd_fast.engine import checkpoint as ckpt
from tskd_fast.engine.config import differences, identity
from tskd_fast.errors import UserError

RUN_FILES = (ckpt.CHECKPOINT, ckpt.FINAL, ckpt.BEST, "config.yaml", "log.csv", "results.json")


@dataclass
class RunPlan:
    """What to do with a run folder: "start", "resume" (with ``state``) or "reuse" (finished)."""

    action: str
    state: dict[str, Any] | None = None


def _has_run_files(run_dir: str) -> bool:
    return any(os.path.exists(os.path.join(run_dir, f)) for f in (*RUN_FILES, "tb"))


def plan_run(run_dir: str, cfg: Mapping[str, Any], resume: bool, overwrite: bool, label: str) -> RunPlan:
    """Inspect ``run_dir`` (read-only) and decide.

    * nothing there (or ``overwrite``): start;
    * a finished run of the same config: reuse its result;
    * an unfinished run of the same config: resume with ``resume``, else refuse;
    * a different run, an unreadable checkpoint, or run files without a checkpoint: refuse.
    Refusals are UserErrors that say how to proceed; nothing is modified here.
    """
    if overwrite:
        return RunPlan("start")
    path = os.path.join(run_dir, ckpt.CHECKPOINT)
    if not os.path.exists(path):
        if os.path.isdir(run_dir) and _has_run_files(run_dir):
            raise UserError(
                f"{label}: {run_dir} holds files of another run but no {ckpt.CHECKPOINT}; choose another "
                "output directory (--output-dir) or pass --overwrite to replace them"
            )
        return RunPlan("start")
    state = ckpt.load_state(path)
    old, new = state.get("identity", {}), identity(cfg)
    if old != new:
        raise UserError(
            f"{label}: {run_dir} holds a different run ({'; '.join(differences(old, new))}); choose another "
            "output directory (--output-dir / experiment.output_dir) or pass --overwrite to replace it"
        )
    if state["epoch"] >= state["epochs"]:
        return RunPlan("reuse", state)
    if not resume:
        raise UserError(
            f"{label}: {run_dir} holds an unfinished run of this config (epoch {state['epoch']}/{state['epochs']}); "
            "pass --resume to continue it or --overwrite to start again"
        )
    return RunPlan("resume", state)


def clear_run(run_dir: str) -> None:
    """Delete the run files of an earlier run in ``run_dir`` (only on --overwrite; other files stay)."""
    for name in RUN_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            os.remove(path)
    tb = os.path.join(run_dir, "tb")
    if os.path.isdir(tb):
        shutil.rmtree(tb)


def check_writable(run_dir: str) -> None:
    """Create ``run_dir`` if needed; UserError if it cannot be written."""
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {run_dir}: {exc.strerror or exc}") from None
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"the output directory {run_dir} is not writable")
