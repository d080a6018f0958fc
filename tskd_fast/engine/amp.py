"""Mixed precision: autocast dtype and GradScaler choice for ``trainer.amp``."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from tskd_fast.errors import UserError


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``trainer.amp`` on ``device``, or None (full precision).

    auto: bfloat16 on CUDA GPUs that support it, float16 on older ones, off on the CPU (CPU
    autocast is slower than float32 for these small convnets).
    """
    if mode == "off":
        return None
    if device.type != "cuda":
        if mode == "auto":
            return None
        if mode == "fp16":
            raise UserError("trainer.amp=fp16 needs a CUDA device; use bf16 or off on the CPU")
        return torch.bfloat16
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """An autocast context for ``dtype`` (a no-op context when dtype is None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for float16 (bfloat16 has float32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
