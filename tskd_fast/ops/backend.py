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


# What TORCH_CUDA_ARCH_LIST defaults to when no GPU is visible at build time (setup.py): SASS for
# Ampere and Hopper, and Hopper's PTX, which the driver compiles for any newer GPU.
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"

# torch.utils.cpp_extension's names for architecture lists (combined names first).
_NAMED_ARCHES = {
    "Kepler+Tesla": "3.7",
    "Kepler": "3.5+PTX",
    "Maxwell+Tegra": "5.3",
    "Maxwell": "5.0;5.2+PTX",
    "Pascal": "6.0;6.1+PTX",
    "Volta+Tegra": "7.2",
    "Volta": "7.0+PTX",
    "Turing": "7.5+PTX",
    "Ampere+Tegra": "8.7",
    "Ampere": "8.0;8.6+PTX",
    "Ada": "8.9+PTX",
    "Hopper": "9.0+PTX",
    "Blackwell+Tegra": "11.0",
    "Blackwell": "10.0;10.3;12.0;12.1+PTX",
    "Rubin": "10.7+PTX",
}


def _arch_entries(arch_list: str) -> list[str]:
    for name, arches in _NAMED_ARCHES.items():
        arch_list = arch_list.replace(name, arches)
    return [entry for entry in arch_list.replace(" ", ";").split(";") if entry]


def cuda_kernels_run_on(capability: tuple[int, int], arch_list: str) -> bool:
    """Whether CUDA code built for `arch_list` (TORCH_CUDA_ARCH_LIST syntax: "8.0;9.0+PTX",
    "9.0a", "Hopper", ...) runs on a GPU of compute capability `capability` (major, minor).

    CUDA's rules: SASS for sm_XY runs on the same major X with minor >= Y; sm_XYa (arch-specific)
    only on exactly X.Y; sm_XYf (family) on the same major with minor >= Y. PTX ("+PTX") for
    compute_XY is compiled by the driver for any capability >= X.Y (compute_XYa: exactly X.Y,
    compute_XYf: its family). An unparsable entry counts as running (the build knew better).
    """
    major, minor = capability
    for entry in _arch_entries(arch_list):
        ptx = entry.endswith("+PTX")
        arch = entry.removesuffix("+PTX")
        suffix = arch[-1] if arch[-1:] in ("a", "f") else ""
        try:
            x, y = (int(part) for part in arch.removesuffix(suffix).split("."))
        except ValueError:
            return True
        if suffix == "a":
            sass_runs = ptx_runs = (major, minor) == (x, y)
        elif suffix == "f":
            sass_runs = ptx_runs = major == x and minor >= y
        else:
            sass_runs = major == x and minor >= y
            ptx_runs = (major, minor) >= (x, y)
        if sass_runs or (ptx and ptx_runs):
            return True
    return False


_CUDA_RUNS: dict[int, bool] = {}


@torch.compiler.assume_constant_result
def cuda_kernels_run_on_device(device: torch.device) -> bool:
    """Whether the built CUDA kernels can run on `device` (a CUDA device): its capability against
    the architectures recorded at build time. An empty record (a GPU build of an older setup.py)
    counts as running. Decided once per device; a constant to torch.compile."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CUDA_RUNS:
        arch_list = _extension.cuda_arch_list()
        _CUDA_RUNS[index] = not arch_list or cuda_kernels_run_on(
            torch.cuda.get_device_capability(index), arch_list
        )
    return _CUDA_RUNS[index]


@torch.compiler.assume_constant_result
def _no_kernel_image(device: torch.device) -> str:
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return (
        f"tskd_fast._C has CUDA kernels for TORCH_CUDA_ARCH_LIST={_extension.cuda_arch_list()!r}, none of "
        f"which runs on cuda:{index} (compute capability {major}.{minor}); rebuild with "
        f'TORCH_CUDA_ARCH_LIST="{major}.{minor}"'
    )


@functools.cache
def _warn_arch_fallback(why: str) -> None:
    warnings.warn(f"tskd_fast: {why}; using the Triton kernels instead.", RuntimeWarning, stacklevel=5)


@torch.compiler.assume_constant_result
def _auto_cuda_backend(device: torch.device) -> str:
    """auto's choice for CUDA tensors when the CUDA kernels were built: "cuda" when they run on
    `device`, else "triton" (warning once why) or "" when triton is missing. A constant to
    torch.compile, so that the warning and the device query happen outside the traced code."""
    if cuda_kernels_run_on_device(device):
        return "cuda"
    if not triton_available():
        return ""
    _warn_arch_fallback(_no_kernel_image(device))
    return "triton"


def default_backend() -> str:
    """The backend `auto` stands for: the TSKD_FAST_BACKEND environment variable, else auto."""
    value = os.environ.get(ENV_VAR, "auto")
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={value!r} is not a backend; expected one of {BACKENDS}")
    return value


# resolve_backend's answers, by (backend, device, TSKD_FAST_BACKEND): the choice is made once.
_RESOLVED: dict[tuple, str] = {}

# os.environ's own mapping (bytes on POSIX), read without os.environ's per-call encoding: the
# variable is read on every call so that setting it takes effect at once.
_ENV_DATA = getattr(os.environ, "_data", None)
_ENV_KEY = (
    ENV_VAR.encode() if isinstance(_ENV_DATA, dict) and all(isinstance(k, bytes) for k in _ENV_DATA) else None
)


def _env_value():
    if _ENV_KEY is not None:
        return _ENV_DATA.get(_ENV_KEY)
    return os.environ.get(ENV_VAR)


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Resolve `backend` ("auto", "cpu", "cuda", "triton", "reference") for tensors on `device`.

    auto: the C++ kernels for CPU tensors; on CUDA the CUDA C++ kernels when built for an
    architecture that runs on the device (cuda_kernels_run_on), else Triton (with a one-time
    warning when CUDA kernels were built for other GPUs); the reference (with a one-time warning
    saying why) when neither exists. A forced backend that cannot run on `device` raises
    ValueError. Decided once per (backend, device, TSKD_FAST_BACKEND) in eager calls.
    """
    if torch.compiler.is_compiling():
        return _resolve(backend, device)
    key = (backend, device, _env_value())
    chosen = _RESOLVED.get(key)
    if chosen is None:
        chosen = _RESOLVED[key] = _resolve(backend, device)
    return chosen


def _resolve(backend: str | None, device: torch.device) -> str:
    if backend is None or backend == "auto":
        backend = default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    kind = device.type
    if backend == "auto":
        if kind == "cpu" and _extension.has_cpu_kernels():
            return "cpu"
        if kind == "cuda" and _extension.has_cuda_kernels():
            chosen = _auto_cuda_backend(device)
            if chosen:
                return chosen
            why = _no_kernel_image(device) + " and triton is not installed"
        elif kind == "cuda" and triton_available():
            return "triton"
        elif kind in ("cpu", "cuda"):
            why = (
                _extension.why_unavailable()
                or "tskd_fast._C was built without CUDA and triton is not installed"
            )
        else:
            why = "no kernels for this device"
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
        if not cuda_kernels_run_on_device(device):
            raise ValueError(f"backend='cuda' is unavailable: {_no_kernel_image(device)}")
        return backend
    # triton
    if not triton_available():
        raise ValueError("backend='triton' is unavailable: triton is not installed")
    if kind == "cpu" and not triton_interpreting():
        raise ValueError("backend='triton' runs CPU tensors only under TRITON_INTERPRET=1")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"backend='triton' needs CUDA tensors, got tensors on {device}")
    return backend
