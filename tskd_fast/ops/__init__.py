"""Op registration: the C++ ops (tskd_fast._C), the Triton ops, and the choice between them.

`torch.ops.tskd_fast.kd_loss`, `dtd_weight`, `convlstm_gates` (+ `convlstm_gates_backward`),
`abf_fuse` (+ `abf_fuse_backward`) and `hcl_loss` are the C++ ops (CPU and, when built, CUDA);
`torch.ops.tskd_fast.<op>_triton` are the Triton ops, defined when the Triton backend is first
used. All share one autograd formula and one fake kernel per op, so they work with autograd,
torch.compile and torch.library.opcheck alike.
"""

from __future__ import annotations

import torch

from tskd_fast.ops import _extension
from tskd_fast.ops.abf_fuse import call_abf_fuse, register_abf_fuse_ops
from tskd_fast.ops.backend import BACKENDS, resolve_backend, triton_available
from tskd_fast.ops.convlstm_gates import call_convlstm_gates, register_convlstm_gates_ops
from tskd_fast.ops.fused_linear_kd import fused_linear_kd_op  # noqa: F401  (registers its ops)
from tskd_fast.ops.hcl import hcl_loss_of_pairs, register_hcl_loss_op
from tskd_fast.ops.kd_loss import KA_MODES, call_kd_loss, dtd_weight_fake, register_kd_loss_op

__all__ = [
    "BACKENDS",
    "KA_MODES",
    "abf_fuse_ops",
    "call_abf_fuse",
    "call_convlstm_gates",
    "hcl_loss_of_pairs",
    "call_kd_loss",
    "convlstm_gates_ops",
    "dtd_weight_op",
    "hcl_loss_op",
    "kd_loss_op",
    "output_pool_bytes",
    "release_output_pool",
    "resolve_backend",
    "triton_available",
]


if _extension.has_cpu_kernels():
    register_kd_loss_op("tskd_fast::kd_loss")
    torch.library.register_fake("tskd_fast::dtd_weight", dtd_weight_fake)
    register_convlstm_gates_ops(
        "tskd_fast::convlstm_gates",
        "tskd_fast::convlstm_gates_backward",
        torch.ops.tskd_fast.convlstm_gates_backward.default,
    )
    register_abf_fuse_ops("tskd_fast::abf_fuse", "tskd_fast::abf_fuse_backward")
    register_hcl_loss_op("tskd_fast::hcl_loss")


def kd_loss_op(backend: str):
    """The kd_loss op of a resolved backend ("cpu", "cuda" or "triton")."""
    if backend == "triton":
        from tskd_fast.ops.triton import kd_loss as triton_kd_loss

        return triton_kd_loss.kd_loss_triton
    return torch.ops.tskd_fast.kd_loss.default


def dtd_weight_op(backend: str):
    """The dtd_weight op of a resolved backend ("cpu", "cuda" or "triton")."""
    if backend == "triton":
        from tskd_fast.ops.triton import dtd_weight as triton_dtd_weight

        return triton_dtd_weight.dtd_weight_triton
    return torch.ops.tskd_fast.dtd_weight.default


def convlstm_gates_ops(backend: str):
    """(forward op, backward op) of the ConvLSTM gates for a resolved backend ("cpu", "cuda" or
    "triton")."""
    if backend == "triton":
        from tskd_fast.ops.triton import convlstm_gates as triton_convlstm

        return triton_convlstm.convlstm_gates_triton, triton_convlstm.convlstm_gates_backward_triton
    return torch.ops.tskd_fast.convlstm_gates.default, torch.ops.tskd_fast.convlstm_gates_backward.default


def abf_fuse_ops(backend: str):
    """The (forward, backward) ABF-fusion ops of a resolved backend ("cpu", "cuda" or "triton")."""
    if backend == "triton":
        from tskd_fast.ops.triton import abf_fuse as triton_abf_fuse

        return triton_abf_fuse.abf_fuse_triton, triton_abf_fuse.abf_fuse_backward_triton
    return torch.ops.tskd_fast.abf_fuse.default, torch.ops.tskd_fast.abf_fuse_backward.default


def hcl_loss_op(backend: str):
    """The hcl_loss op of a resolved backend ("cpu", "cuda" or "triton")."""
    if backend == "triton":
        from tskd_fast.ops.triton import hcl as triton_hcl

        return triton_hcl.hcl_loss_triton
    return torch.ops.tskd_fast.hcl_loss.default


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
