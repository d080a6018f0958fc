"""CIFAR-10 / CIFAR-100 through torchvision: read from ``dataset.root``, downloaded there when absent."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from torchvision import datasets

from tskd_fast.data.registry import DatasetEntry, DataSplits, register_dataset
from tskd_fast.data.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    cifar_transforms,
    normalisation,
)
from tskd_fast.errors import UserError

_SPECS = {
    "cifar10": (datasets.CIFAR10, 10, CIFAR10_MEAN, CIFAR10_STD, "cifar-10-batches-py"),
    "cifar100": (datasets.CIFAR100, 100, CIFAR100_MEAN, CIFAR100_STD, "cifar-100-python"),
}


def _open(cls: type, root: str, train: bool, download: bool, transform: Any, name: str, folder: str) -> Any:
    try:
        return cls(root, train=train, download=download, transform=transform)
    except (RuntimeError, OSError, ValueError) as exc:
        # torchvision raises RuntimeError("Dataset not found or corrupted") when the files are
        # absent, and URLError/OSError when the download fails (e.g. offline).
        how = "and downloading it failed" if download else "and dataset.download is false"
        raise UserError(
            f"{name}: no usable copy in {os.path.abspath(root)} (expected {folder}/ or its .tar.gz there) "
            f"{how} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Put the "
            f"files there, set dataset.root to where they are, or run where the internet is reachable."
        ) from None


def _builder(name: str) -> Callable[..., DataSplits]:
    cls, num_classes, mean, std, folder = _SPECS[name]

    def build(
        cfg: Mapping[str, Any], options: Mapping[str, Any], main_first: Callable[[], Any]
    ) -> DataSplits:
        root = os.path.expanduser(cfg["root"])
        train_tf, test_tf = cifar_transforms(
            32, *normalisation(cfg["normalize"], (mean, std)), augment=cfg["augment"]
        )
        # Only the main process downloads; the others wait and then read the files.
        with main_first():
            train = _open(cls, root, True, cfg["download"], train_tf, name, folder)
            test = _open(cls, root, False, cfg["download"], test_tf, name, folder)
        return DataSplits(train, test, num_classes, f"{name} ({len(train)} train / {len(test)} test images)")

    return build


register_dataset(DatasetEntry("cifar10", _builder("cifar10"), doc="CIFAR-10 via torchvision (downloads)"))
register_dataset(DatasetEntry("cifar100", _builder("cifar100"), doc="CIFAR-100 via torchvision (downloads)"))
