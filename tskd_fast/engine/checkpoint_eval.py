"""``tskd-fast eval``: the test-split accuracy and loss of a checkpoint.

The checkpoint is a run folder of this package (its ``config.yaml`` and ``model_final.pth``, or
``checkpoint.pt`` of an unfinished run), one of its files, or a foreign file that
``tskd_fast.models.checkpoint.read_weights`` reads (RepDistiller / mdistiller model files, the
official ReviewKD and TSKD distilled checkpoints, raw state_dicts). The dataset, model and
evaluation settings come from the run's config (a file inside a run folder finds it next to it),
from ``--config``, and from ``key=value`` overrides of ``dataset.*``, ``student.*`` and
``trainer.*``; a file that names its architecture (this package's) needs no ``student.name``.

The evaluation is the trainer's own (same loader, batch size, memory format and autocast), so a
run's final checkpoint gives exactly the test top-1 of its last epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tskd_fast.data import build_data, eval_loader
from tskd_fast.engine import checkpoint as ckpt
from tskd_fast.engine.amp import amp_dtype
from tskd_fast.engine.config import apply_overrides, find_config, parse_override, read_yaml, resolve_config
from tskd_fast.engine.distributed import DistContext, init_distributed
from tskd_fast.engine.evaluation import evaluate
from tskd_fast.errors import UserError
from tskd_fast.models import build_model
from tskd_fast.models.checkpoint import load_state_dict, read_weights

# The config sections an evaluation reads (others describe training and are ignored).
EVAL_SECTIONS = ("dataset", "student", "trainer")


@dataclass
class CheckpointScore:
    """What ``evaluate_checkpoint`` measured (accuracies in %, loss the mean cross-entropy)."""

    path: str
    layout: str
    model: str
    dataset: str
    images: int
    top1: float
    top5: float | None
    loss: float
    seconds: float

    def report(self) -> str:
        top5 = f"  top-5 {self.top5:.2f} %" if self.top5 is not None else ""
        return (
            f"{self.path}: {self.model}, read as {self.layout}\n"
            f"{self.dataset}\n"
            f"top-1 {self.top1:.2f} %{top5}  loss {self.loss:.4f}  ({self.images} test images, {self.seconds:.1f} s)"
        )


def locate(path: str) -> tuple[str, str | None]:
    """(the weights file, the run's config.yaml or None) of a run folder or a checkpoint file."""
    if os.path.isdir(path):
        config = os.path.join(path, "config.yaml")
        for name in (ckpt.FINAL, ckpt.CHECKPOINT, ckpt.BEST):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name), config if os.path.isfile(config) else None
        raise UserError(
            f"{path} is a folder without a run's weights ({ckpt.FINAL}, {ckpt.CHECKPOINT} or {ckpt.BEST})"
        )
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
    return path, config if os.path.isfile(config) else None


def eval_config(
    config_file: str | None, run_config: str | None, overrides: Sequence[str], arch: str | None
) -> dict[str, Any]:
    """The resolved config of an evaluation: ``--config`` (else the run's config) with its
    dataset / student / trainer sections, the overrides on top, the file's architecture when no
    ``student.name`` is given."""
    for text in overrides:
        section = parse_override(text)[0][0]
        if section not in EVAL_SECTIONS:
            raise UserError(
                f"override {text!r}: eval reads only the {', '.join(s + '.*' for s in EVAL_SECTIONS)} keys"
            )
    source = find_config(config_file) if config_file else run_config
    raw = read_yaml(source) if source else {}
    data: dict[str, Any] = {s: dict(raw.get(s) or {}) for s in EVAL_SECTIONS}
    data = apply_overrides(data, overrides)
    if not data["student"].get("name"):
        if arch is None:
            raise UserError(
                "student.name: the checkpoint does not record its architecture; name it "
                "(e.g. student.name=resnet8x4) or give the --config it was trained with"
            )
        data["student"]["name"] = arch
    data["distiller"] = {"name": "vanilla"}
    return resolve_config(data)


def evaluate_checkpoint(
    path: str, config_file: str | None = None, overrides: Sequence[str] = (), ctx: DistContext | None = None
) -> CheckpointScore:
    """Top-1, top-5 and mean loss of the checkpoint at ``path`` on the configured test split."""
    start = time.time()
    weights_file, run_config = locate(path)
    try:
        weights = read_weights(weights_file)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    cfg = eval_config(config_file, run_config, overrides, weights.arch)
    tcfg = cfg["trainer"]
    ctx = ctx or init_distributed(tcfg["device"])
    data = build_data(cfg["dataset"])
    name = cfg["student"]["name"]
    model = build_model(name, data.num_classes)
    try:
        load_state_dict(model, weights.state_dict, weights_file)
    except ValueError as exc:
        raise UserError(f"{exc} (student.name={name})") from None
    model.to(ctx.device)
    if tcfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    loader = eval_loader(
        data.test, tcfg["eval_batch_size"], cfg["dataset"]["num_workers"], 0, 1, ctx.device.type == "cuda"
    )
    scores = evaluate(model, loader, ctx, tcfg["channels_last"], amp_dtype(tcfg["amp"], ctx.device))
    return CheckpointScore(
        path=weights_file,
        layout=weights.layout,
        model=name,
        dataset=data.description,
        images=len(data.test),
        top1=scores["top1"],
        top5=scores.get("top5"),
        loss=scores["loss"],
        seconds=time.time() - start,
    )


__all__ = ["CheckpointScore", "eval_config", "evaluate_checkpoint", "locate"]
