"""Capture and restore every random generator a training run draws from (for exact resume)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """States of Python's, NumPy's, torch's CPU and every CUDA generator, as checkpointable values.

    NumPy's state is stored as plain lists so that the checkpoint loads with ``weights_only=True``.
    """
    # The legacy global NumPy generator is what third-party code (and DataLoader workers) use.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _as_tuple(value: Any) -> Any:
    # Checkpoints may turn tuples into lists; random.setstate needs the nested tuples back.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``; CUDA states are restored when present and CUDA is in use."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in states])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
