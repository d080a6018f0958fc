"""Shared test set-up: which kd-loss backends exist here, and the tolerance rule."""

import os

import torch

# Triton kernels run on the CPU in the interpreter when there is no GPU; the variable must be set
# before triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
