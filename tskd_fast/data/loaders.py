"""Data loaders: sharded (DistributedSampler) training batches and disjoint evaluation shards."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, rank + 2 * world, ...: each item on exactly one rank.

    Unlike DistributedSampler it never pads with repeats, so summed evaluation counts are exact.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def train_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled per-rank batches of ``batch_size`` (the per-process batch), last partial batch dropped.

    The order is DistributedSampler's (seeded by seed + epoch: call ``loader.sampler.set_epoch``);
    the loader's own generator seeds the workers' augmentation and is re-seeded by the trainer each
    epoch, so an epoch's batches do not depend on what ran before it (exact resume). Dropping the
    last partial batch avoids size-1 BatchNorm batches; the shuffle changes which items it is.
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    if len(sampler) < batch_size:
        raise ValueError(
            f"the training set has {len(sampler)} items per process, fewer than one batch of {batch_size}"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        generator=torch.Generator(),
    )


def eval_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """This rank's disjoint shard of ``dataset`` in order (see ShardSampler)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), rank, world_size),
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),
    )
