"""The peak memory of a run, for the run's results and ``tskd-fast compare``.

CUDA: the caching allocator's peak of allocated bytes on the run's device (tensors only). CPU:
the process's peak resident set (Linux ``VmHWM``, which writing 5 to ``/proc/self/clear_refs``
resets to the current resident set), so it includes the interpreter, torch and the data held in
memory; where it cannot be reset, the process's lifetime peak (``ru_maxrss``).
"""

from __future__ import annotations

import re

import torch

_STATUS, _CLEAR_REFS = "/proc/self/status", "/proc/self/clear_refs"


def _resident_peak_kib() -> int | None:
    try:
        with open(_STATUS) as f:
            found = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    except OSError:
        found = None
    if found is not None:
        return int(found.group(1))
    try:
        import resource
    except ImportError:
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


class PeakMemory:
    """``reset()`` at the start of a run, ``peak()`` (bytes, None when unknown) after each step of it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "CUDA allocated" if device.type == "cuda" else "process resident"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open(_CLEAR_REFS, "w") as f:
                f.write("5")
        except OSError:
            pass  # the lifetime peak is what can be read then

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        kib = _resident_peak_kib()
        return None if kib is None else kib * 1024


__all__ = ["PeakMemory"]
