"""Run logs: ``log.csv`` (one row per epoch, rewritten from the checkpointed history so it always
matches the checkpoint) and TensorBoard scalars in ``tb/``; console output goes through tqdm."""

from __future__ import annotations

import csv
import io
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm import tqdm

from tskd_fast.engine.checkpoint import atomic_text


def say(message: str) -> None:
    """Print a line without breaking an active progress bar."""
    tqdm.write(message, file=sys.stdout)


def write_csv(history: Sequence[Mapping[str, Any]], path: str) -> None:
    """Write the per-epoch history as CSV (columns = union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_text(buf.getvalue(), path)


class TensorBoardLog:
    """Scalars to ``<run>/tb`` (or ``<run>/tb/<subfolder>``, a series with steps of its own);
    silently disabled (after one warning) if tensorboard is missing."""

    def __init__(self, folder: str, enabled: bool, first_epoch: int, subfolder: str | None = None) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn(
                "tensorboard is not installed: no TensorBoard logs (pip install tensorboard)", stacklevel=2
            )
            return
        # purge_step drops events of epochs after the resume point left by a killed run.
        path = os.path.join(folder, "tb", *([subfolder] if subfolder else []))
        self.writer = SummaryWriter(path, purge_step=first_epoch or None)

    def log(self, row: Mapping[str, Any], step: int, group: str | None = None) -> None:
        """Add the numbers of ``row`` at ``step``, under ``group/`` (default: test/ or train/ by key)."""
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float):
                tag = group or ("test" if key.startswith("test_") else "train")
                self.writer.add_scalar(f"{tag}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
