"""Loading of the compiled extension tskd_fast._C, with a clear word when it is missing or stale."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import torch

BUILD_HINT = "build it with `pip install --no-build-isolation -e .` from the tskd_fast source tree"

_state: dict[str, object] = {}


def _load() -> tuple[ModuleType | None, str]:
    try:
        info = importlib.import_module("tskd_fast._build_info")
    except ImportError:
        return None, f"tskd_fast._C is not built; {BUILD_HINT}"
    # Importing an extension built against another torch can crash the process instead of
    # raising, so the versions are compared before the import.
    if info.TORCH_VERSION != torch.__version__:
        return None, (
            f"tskd_fast._C was built against torch {info.TORCH_VERSION} but torch {torch.__version__} "
            f"is installed; rebuild it: {BUILD_HINT}"
        )
    _state["arch_list"] = str(getattr(info, "CUDA_ARCH_LIST", ""))
    try:
        module = importlib.import_module("tskd_fast._C")
    except ImportError as error:
        return None, f"tskd_fast._C failed to load ({error}); {BUILD_HINT}"
    return module, ""


def extension() -> ModuleType | None:
    """The loaded tskd_fast._C module, or None when it is not built or does not match torch."""
    if "module" not in _state:
        module, why = _load()
        _state["module"], _state["why"] = module, why
        if module is None and "not built" not in why:
            warnings.warn(why, RuntimeWarning, stacklevel=2)
    return _state["module"]  # type: ignore[return-value]


def why_unavailable() -> str:
    """Why extension() returned None ("" when it loaded)."""
    extension()
    return str(_state["why"])


def has_cpu_kernels() -> bool:
    return extension() is not None


def has_cuda_kernels() -> bool:
    module = extension()
    return module is not None and bool(getattr(module, "WITH_CUDA", 0))


def cuda_arch_list() -> str:
    """The TORCH_CUDA_ARCH_LIST the CUDA kernels were built for, as setup.py recorded it ("" when
    they were not built, or by a setup.py that did not record it)."""
    if not has_cuda_kernels():
        return ""
    return str(_state.get("arch_list", ""))
