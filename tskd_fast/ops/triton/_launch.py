"""Launch-time helpers shared by the Triton ops."""

from __future__ import annotations

import contextlib

import numpy as np

from tskd_fast.ops.triton import interpreting


def quiet_interpreter() -> contextlib.AbstractContextManager:
    """Silence numpy's floating-point warnings while the interpreter runs a kernel.

    Masked lanes and rows that end up NaN by design compute -inf - -inf, log(0) and the like, as
    they do on the GPU, where nobody warns; in the interpreter each would print a RuntimeWarning.
    """
    return np.errstate(all="ignore") if interpreting() else contextlib.nullcontext()
