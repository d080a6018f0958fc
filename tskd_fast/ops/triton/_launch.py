"""Launch-time helpers shared by the Triton ops."""

from __future__ import annotations

import contextlib

import numpy as np


def runs_in_interpreter(kernel) -> bool:
    """Whether `kernel` (a @triton.jit function) runs in the Triton interpreter.

    triton.jit decides this once, when the kernel is defined (TRITON_INTERPRET=1 at that time),
    so the kernel object is asked rather than the environment, which may have changed since.
    """
    return type(kernel).__name__ == "InterpretedFunction"


def quiet_interpreter(interpreted: bool) -> contextlib.AbstractContextManager:
    """Silence numpy's floating-point warnings while the interpreter runs a kernel.

    Masked lanes and rows that end up NaN by design compute -inf - -inf, log(0) and the like, as
    they do on the GPU, where nobody warns; in the interpreter each would print a RuntimeWarning.
    """
    return np.errstate(all="ignore") if interpreted else contextlib.nullcontext()
