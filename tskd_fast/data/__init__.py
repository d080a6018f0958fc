"""Datasets for the trainer, selected by ``dataset.name``.

* ``shapes``: the embedded default, synthetic CIFAR-shaped images generated from a seed (no
  download; for trying things out; see ``tskd_fast.data.embedded``).
* ``cifar10``, ``cifar100``: torchvision, read from ``dataset.root`` and downloaded when absent.
* ``imagenet``, ``tiny_imagenet``, ``cinic10``, ``imagefolder``: class-folder trees under
  ``dataset.root``.

``build_data(dataset_cfg)`` returns the train/test splits (optionally subsets); ``train_loader`` /
``eval_loader`` make the (sharded) loaders.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import Subset

from tskd_fast.data import cifar, folder, shapes  # noqa: F401  (registration)
from tskd_fast.data.loaders import ShardSampler, eval_loader, train_loader
from tskd_fast.data.registry import DatasetEntry, DataSplits, datasets, get_dataset, register_dataset


def _subset(dataset: Any, size: int | None, seed: int) -> Any:
    """A fixed random subset of ``size`` items (the same on every run and rank), or the dataset."""
    if size is None or size >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, sorted(order[:size].tolist()))


def build_data(cfg: Mapping[str, Any], main_first: Callable[[], Any] = contextlib.nullcontext) -> DataSplits:
    """Build the dataset named by a resolved ``dataset`` config section (train/test subsets applied)."""
    entry = get_dataset(cfg["name"])
    splits = entry.build(cfg, cfg.get(cfg["name"], {}), main_first)
    splits.train = _subset(splits.train, cfg["train_subset"], 0)
    splits.test = _subset(splits.test, cfg["test_subset"], 1)
    return splits


__all__ = [
    "DataSplits",
    "DatasetEntry",
    "ShardSampler",
    "build_data",
    "datasets",
    "eval_loader",
    "get_dataset",
    "register_dataset",
    "train_loader",
]
