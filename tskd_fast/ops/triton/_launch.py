"""Launch-time helpers shared by the Triton ops: the interpreter, and the error flag through which
the kernels report a bad value."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

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


def check_device_runs_triton(t: torch.Tensor, interpreted: bool) -> None:
    """CPU tensors run only in the Triton interpreter; say so instead of failing in the launcher."""
    if t.device.type == "cpu" and not interpreted:
        raise ValueError(
            "CPU tensors run only in the Triton interpreter (TRITON_INTERPRET=1 set before triton is "
            "imported); use CUDA tensors, or the 'cpu' backend"
        )


def value_flag(device: torch.device) -> torch.Tensor:
    """The kernels' error flag: (1,) int32 holding 1, which a kernel clears to 0 when a value check
    (a label out of range, a temperature not finite and > 0) fails on any row."""
    return torch.ones((1,), dtype=torch.int32, device=device)


def raise_if_flagged(flag: torch.Tensor, op: str, what: str, name_bad_value: Callable[[], None]) -> None:
    """Act on the error flag a kernel wrote (value_flag), as the C++ ops act on bad values.

    On the CPU (the interpreter) the flag is read for free: when a kernel cleared it,
    name_bad_value() (the op spec's value check) finds the bad value and raises the ValueError that
    names it, the C++ CPU op's words. On CUDA, reading the flag would synchronise the stream on
    every call, so one asynchronous device assert checks it instead, as the CUDA C++ kernels assert
    in the kernel: the next synchronising call fails and the CUDA context is lost, as after any
    device assert. `what` says which values the kernel checked.
    """
    if flag.device.type != "cpu":
        torch._assert_async(flag, f"{op}: {what}")
        return
    if bool(flag[0]):
        return
    name_bad_value()
    raise RuntimeError(f"{op}: the kernel flagged an invalid value that the host check did not find ({what})")
