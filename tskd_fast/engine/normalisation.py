"""Find the per-channel mean/std a training set normalises its images with (methods that work on
un-normalised pixels, such as TST's augmentation, need them)."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Subset


def _from_transform(transform: Any) -> tuple[list[float], list[float]] | None:
    from torchvision.transforms import Normalize

    if isinstance(transform, Normalize):
        return [float(v) for v in transform.mean], [float(v) for v in transform.std]
    for inner in getattr(transform, "transforms", ()):
        found = _from_transform(inner)
        if found is not None:
            return found
    return None


def normalisation_of(dataset: Any) -> tuple[list[float], list[float]] | None:
    """(mean, std) per channel in [0, 1] units, or None when the dataset does not say.

    Looks through Subset wrappers; reads the in-memory datasets' ``mean``/``std`` (stored in 0..255
    units, shape (1, C, 1, 1)) and the torchvision ``Normalize`` inside a dataset's ``transform``.
    """
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    if mean is not None and std is not None and hasattr(mean, "flatten"):
        return (mean.flatten() / 255.0).tolist(), (std.flatten() / 255.0).tolist()
    return _from_transform(getattr(dataset, "transform", None))


__all__ = ["normalisation_of"]
