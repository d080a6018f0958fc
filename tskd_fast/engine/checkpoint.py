"""Atomic checkpoint files and the training-state checkpoint format.

``checkpoint.pt`` (written after every epoch) holds everything ``--resume`` needs. Its ``"model"``
entry is the student's state_dict, so the file also loads as a teacher checkpoint in the
RepDistiller / mdistiller layout; ``model_final.pth`` holds just ``{"model", "epoch", "arch",
"top1"}`` once training finished.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch

from tskd_fast.errors import UserError

FORMAT = "tskd_fast.train/1"
CHECKPOINT = "checkpoint.pt"
FINAL = "model_final.pth"
BEST = "model_best.pth"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[Any], None], binary: bool = True) -> None:
    """Write a file via a temporary file in the same folder and ``os.replace``, so a crash
    leaves either the old file or the new one, never a torn one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` through ``atomic_write``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_text(text: str, path: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def load_state(path: str) -> dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``); UserError if it is unreadable or foreign."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise UserError(
            f"cannot read checkpoint {path}: the file is corrupt or was not written by tskd-fast "
            f"({type(exc).__name__}). Move it away, or pass --overwrite to start this run again."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a tskd-fast training checkpoint (format {FORMAT})")
    return state
