"""Op registration: the C++ ops (tskd_fast._C), the Triton ops, and the choice between them.

`torch.ops.tskd_fast.kd_loss`, `dtd_weight`, `convlstm_gates` and `convlstm_gates_backward` are
the C++ ops (CPU and, when built, CUDA); `torch.ops.tskd_fast.kd_loss_triton`,
`dtd_weight_triton`, `convlstm_gates_triton` and `convlstm_gates_backward_triton` are the Triton
ops, defined when the Triton backend is first used. All share one autograd formula and one fake
kernel, so they work with autograd, torch.compile and torch.library.opcheck alike.
"""

from __future__ import annotations

import torch

from tskd_fast.ops import _extension
from tskd_fast.ops.backend import BACKENDS, resolve_backend, triton_available
from tskd_fast.ops.convlstm_gates import call_convlstm_gates, register_convlstm_gates_ops
from tskd_fast.ops.kd_loss import KA_MODES, call_kd_loss, dtd_weight_fake, register_kd_loss_op

__all__ = [
    "BACKENDS",
    "KA_MODES",
    "call_convlstm_gates",
    "call_kd_loss",
    "convlstm_gates_ops",
    "dtd_weight_op",
    "kd_loss_op",
    "resolve_backend",
    "triton_available",
]


def _has_cpp_op(name: str) -> bool:
    """Whether the loaded tskd_fast._C defines torch.ops.tskd_fast.<name>."""
    try:
        getattr(torch.ops.tskd_fast, name)
    except (AttributeError, RuntimeError):
        return False
    return True


if _extension.has_cpu_kernels():
    register_kd_loss_op("tskd_fast::kd_loss")
    torch.library.register_fake("tskd_fast::dtd_weight", dtd_weight_fake)
    # An extension built before the ConvLSTM ops existed still loads; it just lacks them.
    if _has_cpp_op("convlstm_gates_backward"):
        register_convlstm_gates_ops(
            "tskd_fast::convlstm_gates",
            "tskd_fast::convlstm_gates_backward",
            torch.ops.tskd_fast.convlstm_gates_backward.default,
        )


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
    if not _has_cpp_op("convlstm_gates_backward"):
        raise RuntimeError(
            f"tskd_fast._C was built before the convlstm_gates ops existed; {_extension.BUILD_HINT}"
        )
    return torch.ops.tskd_fast.convlstm_gates.default, torch.ops.tskd_fast.convlstm_gates_backward.default
