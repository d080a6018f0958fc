"""The fused ops: one spec per op (tskd_fast/ops/<family>.py), the C++ and Triton ops made from
them (tskd_fast.ops.library), and the choice between backends (tskd_fast.ops.backend).

`torch.ops.tskd_fast.<op>` are the C++ ops (CPU and, when built, CUDA; autograd in C++);
`torch.ops.tskd_fast.<op>_triton` are the Triton ops, defined when the Triton backend is first
used. Both carry the spec's fake kernel, so they work with autograd, torch.compile and
torch.library.opcheck alike. docs/adding-an-op.md says how a family is added.
"""

from __future__ import annotations

import torch

from tskd_fast.ops import _extension, abf, convlstm, dtd, hcl, kd_loss
from tskd_fast.ops.backend import BACKENDS, resolve_backend, triton_available
from tskd_fast.ops.library import SPECS, call, op_for

__all__ = [
    "BACKENDS",
    "SPECS",
    "abf",
    "call",
    "convlstm",
    "dtd",
    "hcl",
    "kd_loss",
    "op_for",
    "output_pool_bytes",
    "release_output_pool",
    "resolve_backend",
    "triton_available",
]


def output_pool_bytes() -> int:
    """Bytes the CPU kernels hold in released output blocks for reuse (0 without the extension).

    CPU outputs of 4 MiB and more (gradients, ConvLSTM states) come from a pool of blocks that
    earlier outputs released, so a training loop does not fault in fresh pages every step; the
    pool keeps at most 1 GiB of released blocks.
    """
    return int(torch.ops.tskd_fast.output_pool_cached_bytes()) if _extension.has_cpu_kernels() else 0


def release_output_pool() -> int:
    """Return every released output block to the system (like torch.cuda.empty_cache); the bytes."""
    return int(torch.ops.tskd_fast.release_output_pool()) if _extension.has_cpu_kernels() else 0
