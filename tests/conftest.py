"""Shared test set-up: which fused backends run here, the device of each, and a recorder of the ATen
ops a call runs."""

import os

import torch

# Triton kernels run on the CPU in the interpreter when there is no GPU; the variable must be set
# before triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from tskd_fast.ops import _extension  # noqa: E402
from tskd_fast.ops.backend import cuda_kernels_run_on_device, triton_available  # noqa: E402


def kernel_backends() -> list[str]:
    """The fused backends that can run on this machine."""
    found = []
    if _extension.has_cpu_kernels():
        found.append("cpu")
    if triton_available() and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"):
        found.append("triton")
    if (
        torch.cuda.is_available()
        and _extension.has_cuda_kernels()
        and cuda_kernels_run_on_device(torch.device("cuda"))
    ):
        found.append("cuda")
    return found


def device_of(backend: str) -> str:
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


class CountOps(TorchDispatchMode):
    """Records the name of every ATen op run under it."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


# The ATen ops a separate value check on the host would run (labels in range, temperatures > 0).
CHECK_OPS = {"ne", "eq", "lt", "le", "gt", "ge", "isfinite", "any", "all", "bitwise_and", "logical_and"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
