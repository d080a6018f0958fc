"""Which implementation an op call runs: the C++ kernels, Triton or the PyTorch reference."""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch

from tskd_fast.ops import _extension

BACKENDS = ("auto", "cpu", "cuda", "triton", "reference")
ENV_VAR = "TSKD_FAST_BACKEND"


# Looked up once at import: a cached function would be traced (and warned about) by Dynamo.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON_INSTALLED


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _warn_fallback(device_type: str, why: str) -> None:
    warnings.warn(
        f"tskd_fast: no fused kernel for {device_type} tensors ({why}); using the PyTorch reference "
        f"implementation, which is slower.",
        RuntimeWarning,
        stacklevel=4,
    )


def default_backend() -> str:
    """The backend `auto` stands for: the TSKD_FAST_BACKEND environment variable, else auto."""
    value = os.environ.get(ENV_VAR, "auto")
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={value!r} is not a backend; expected one of {BACKENDS}")
    return value


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Resolve `backend` ("auto", "cpu", "cuda", "triton", "reference") for tensors on `device`.

    auto: the C++ kernels for CPU tensors; on CUDA the CUDA C++ kernels when built, else Triton;
    the reference (with a one-time warning saying why) when neither exists. A forced backend that
    cannot run on `device` raises ValueError.
    """
    if backend is None or backend == "auto":
        backend = default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    kind = device.type
    if backend == "auto":
        if kind == "cpu" and _extension.has_cpu_kernels():
            return "cpu"
        if kind == "cuda" and _extension.has_cuda_kernels():
            return "cuda"
        if kind == "cuda" and triton_available():
            return "triton"
        why = _extension.why_unavailable() if kind in ("cpu", "cuda") else "no kernels for this device"
        if kind == "cuda" and not why:
            why = "tskd_fast._C was built without CUDA and triton is not installed"
        _warn_fallback(kind, why)
        return "reference"
    if backend == "reference":
        return backend
    if backend == "cpu":
        if kind != "cpu":
            raise ValueError(f"backend='cpu' needs CPU tensors, got tensors on {device}")
        if not _extension.has_cpu_kernels():
            raise ValueError(f"backend='cpu' is unavailable: {_extension.why_unavailable()}")
        return backend
    if backend == "cuda":
        if kind != "cuda":
            raise ValueError(f"backend='cuda' needs CUDA tensors, got tensors on {device}")
        if not _extension.has_cuda_kernels():
            why = _extension.why_unavailable() or "tskd_fast._C was built without CUDA kernels"
            raise ValueError(f"backend='cuda' is unavailable: {why}")
        return backend
    # triton
    if not triton_available():
        raise ValueError("backend='triton' is unavailable: triton is not installed")
    if kind == "cpu" and not triton_interpreting():
        raise ValueError("backend='triton' runs CPU tensors only under TRITON_INTERPRET=1")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"backend='triton' needs CUDA tensors, got tensors on {device}")
    return backend
