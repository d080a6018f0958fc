"""The standard augmentations: CIFAR-style (random crop with padding + flip) and ImageNet-style."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
CINIC10_MEAN, CINIC10_STD = (0.47889522, 0.47227842, 0.43047404), (0.24205776, 0.23828046, 0.25874835)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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
