"""Process-group set-up for ``torchrun`` (DDP): NCCL on CUDA, gloo on CPU; rank-0 helpers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tskd_fast.errors import UserError


@dataclass
class DistContext:
    """Where this process runs: rank, world size, device; single-process when world_size == 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes in place (no-op on one process); returns it."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the body on rank 0 first (e.g. a download), then on the other ranks."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def _pick_device(spec: str, local_rank: int, world_size: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"trainer.device={spec!r} but CUDA is not available here; use trainer.device=cpu")
        if spec == "cuda" or world_size > 1:
            # Under torchrun each process takes the GPU of its local rank.
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise UserError(
                f"trainer.device: invalid device {spec!r}; use auto, cpu, cuda or cuda:N"
            ) from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"trainer.device={spec!r}: only {torch.cuda.device_count()} GPUs are visible")
        return device
    raise UserError(f"trainer.device: invalid device {spec!r}; use auto, cpu, cuda or cuda:N")


def init_distributed(device_spec: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process.

    The backend is NCCL for CUDA devices and gloo for the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(device_spec, local_rank, world_size)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, **({"device_id": device} if device.type == "cuda" else {}))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
