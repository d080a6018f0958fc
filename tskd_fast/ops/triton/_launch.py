"""Launch-time helpers shared by the Triton ops."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


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


def on_device_of(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make `tensor`'s CUDA device the current one while allocating outputs and launching.

    Triton launches on the current device and stream, and torch.library.custom_op adds no device
    guard: without this, inputs on cuda:1 while cuda:0 is current would run on the wrong device.
    A no-op for CPU tensors (the interpreter).
    """
    if tensor.device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(tensor.device)
