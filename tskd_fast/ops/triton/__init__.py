"""Triton kernels of the fused ops, wrapped as custom ops (tskd_fast::kd_loss_triton and
tskd_fast::dtd_weight_triton).

The submodules import triton and register their op on import; importing this package alone
does neither, so `import tskd_fast` stays cheap and works without triton installed.
"""

from __future__ import annotations

import os


def interpreting() -> bool:
    """Whether Triton kernels run in the interpreter (TRITON_INTERPRET=1, read by triton when the
    kernels are defined), which also runs them on CPU tensors."""
    try:
        from triton import knobs
    except ImportError:  # older triton
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return bool(knobs.runtime.interpret)
