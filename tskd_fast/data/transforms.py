"""The standard augmentations: CIFAR-style (random crop with padding + flip) and ImageNet-style."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchvision import transforms as T

# CIFAR-10's statistics as the ReviewKD and TSKD code write them (125.3, 123.0, 113.9) / 255 and
# (63.0, 62.1, 66.7) / 255: their CIFAR-100 runs and released students use these.
CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
# CIFAR-100's as RepDistiller, mdistiller and TST write them (their released teachers use these).
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
CINIC10_MEAN, CINIC10_STD = (0.47889522, 0.47227842, 0.43047404), (0.24205776, 0.23828046, 0.25874835)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# The named values of ``dataset.normalize`` (besides [mean, std] lists).
NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}


def normalisation_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid ``dataset.normalize`` (None when it is): a name of
    NORMALISATIONS or [mean, std], two lists of 3 numbers with std > 0."""
    if value is None or (isinstance(value, str) and value in NORMALISATIONS):
        return None
    expected = (
        f"must be one of {', '.join(NORMALISATIONS)} or [mean, std] (two lists of 3 numbers), got {value!r}"
    )
    if not (isinstance(value, list | tuple) and len(value) == 2):
        return expected
    for part in value:
        if not (isinstance(part, list | tuple) and len(part) == 3):
            return expected
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in part):
            return expected
    if not all(v > 0 for v in value[1]):
        return f"std must be > 0 in every channel, got {list(value[1])}"
    return None


def normalisation(
    value: Any, default: tuple[Sequence[float], Sequence[float]]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in [0, 1] units for a checked ``dataset.normalize`` value; ``default`` (the
    dataset's own statistics) when it is None."""
    if value is None:
        mean, std = default
    elif isinstance(value, str):
        mean, std = NORMALISATIONS[value]
    else:
        mean, std = value
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def cifar_transforms(
    size: int, mean: Sequence[float], std: Sequence[float], augment: bool = True, resize: bool = False
) -> tuple[T.Compose, T.Compose]:
    """(train, test) transforms of PIL images -> normalised (3, size, size) float32 tensors.

    Train: RandomCrop(size, padding=size // 8) + RandomHorizontalFlip (padding 4 at 32x32, the
    CIFAR recipe of RepDistiller / mdistiller); test: no augmentation. ``resize`` first scales
    and centre-crops images of other sizes to size x size (folders of mixed sizes).
    """
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    fit = [T.Resize(size), T.CenterCrop(size)] if resize else []
    test = T.Compose([*fit, *norm])
    if not augment:
        return test, test
    train = T.Compose([*fit, T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip(), *norm])
    return train, test


def imagenet_transforms(
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    augment: bool = True,
) -> tuple[T.Compose, T.Compose]:
    """(train, test) ImageNet transforms: RandomResizedCrop + flip; Resize(size * 8/7) + CenterCrop."""
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    test = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), *norm])
    if not augment:
        return test, test
    train = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *norm])
    return train, test
