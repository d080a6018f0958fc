"""Name -> builder table of the datasets selectable as ``dataset.name``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from tskd_fast.schema import Section


@dataclass
class DataSplits:
    """A built dataset: train/test splits yielding (image (3, H, W) float32, label int), and facts."""

    train: Dataset
    test: Dataset
    num_classes: int
    description: str


# build(dataset_cfg, options, main_first) -> DataSplits. `options` is the resolved `dataset.<name>`
# section; `main_first` is a context manager under which only the main process may download.
Builder = Callable[[Mapping[str, Any], Mapping[str, Any], Callable[[], Any]], DataSplits]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    build: Builder
    options: Section = field(default_factory=dict)
    doc: str = ""


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    """Add a dataset; its options (if any) live under ``dataset.<name>`` in the config."""
    if entry.name in _DATASETS:
        raise ValueError(f"dataset {entry.name!r} is already registered")
    _DATASETS[entry.name] = entry
    return entry


def datasets() -> dict[str, DatasetEntry]:
    """All registered datasets, in registration order."""
    import tskd_fast.data  # noqa: F401  (the built-in datasets register on import)

    return dict(_DATASETS)


def get_dataset(name: str) -> DatasetEntry:
    """The dataset called ``name``; ValueError listing the valid names otherwise."""
    table = datasets()
    if name not in table:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(table)}")
    return table[name]
