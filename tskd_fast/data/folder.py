"""Image-folder datasets: ImageNet, Tiny ImageNet, CINIC-10 and any ``root/<split>/<class>/*`` tree."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from tskd_fast.data.registry import DatasetEntry, DataSplits, register_dataset
from tskd_fast.data.transforms import (
    CINIC10_MEAN,
    CINIC10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    cifar_transforms,
    imagenet_transforms,
    normalisation,
)
from tskd_fast.errors import UserError
from tskd_fast.schema import Field, positive


def _split_dir(root: str, sub: str, what: str) -> str:
    path = os.path.join(os.path.expanduser(root), sub)
    if not os.path.isdir(path):
        raise UserError(
            f"{what}: folder {os.path.abspath(path)} does not exist (dataset.root={root!r}); expected "
            f"{os.path.join(root, sub)}/<class>/<image files>"
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"{what}: folder {os.path.abspath(path)} is not readable")
    return path


def _image_folder(path: str, transform: Any, what: str) -> ImageFolder:
    try:
        return ImageFolder(path, transform=transform)
    except (FileNotFoundError, PermissionError, OSError) as exc:
        raise UserError(f"{what}: cannot read image folder {os.path.abspath(path)}: {exc}") from None


class AnnotatedImages(Dataset):
    """Images listed with their class names (Tiny ImageNet's ``val/val_annotations.txt`` layout).

    Items are (transform(image), class index) with the class indices of the training folder.
    """

    def __init__(self, samples: list[tuple[str, int]], transform: Any) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        return self.transform(default_loader(path)), label


def _tiny_imagenet_val(root: str, class_to_idx: Mapping[str, int], transform: Any) -> Dataset:
    """Tiny ImageNet's val split: class folders if reorganised, else images + val_annotations.txt."""
    val = _split_dir(root, "val", "tiny_imagenet")
    notes = os.path.join(val, "val_annotations.txt")
    if not os.path.isfile(notes):
        return _image_folder(val, transform, "tiny_imagenet")
    samples = []
    with open(notes) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in class_to_idx:
                samples.append((os.path.join(val, "images", parts[0]), class_to_idx[parts[1]]))
    if not samples:
        raise UserError(f"tiny_imagenet: {notes} lists no images of the training classes")
    return AnnotatedImages(samples, transform)


def _build(name: str, cfg: Mapping[str, Any], options: Mapping[str, Any]) -> DataSplits:
    root, augment = cfg["root"], cfg["augment"]
    if name == "cinic10":
        default = (CINIC10_MEAN, CINIC10_STD)
    elif name == "imagefolder":
        default = (options["mean"], options["std"])
    else:
        default = (IMAGENET_MEAN, IMAGENET_STD)
    mean, std = normalisation(cfg["normalize"], default)
    if name == "imagenet":
        train_tf, test_tf = imagenet_transforms(options["image_size"], mean, std, augment=augment)
    elif name == "tiny_imagenet":
        train_tf, test_tf = cifar_transforms(64, mean, std, augment=augment)
    elif name == "cinic10":
        train_tf, test_tf = cifar_transforms(32, mean, std, augment=augment)
    elif options["transform"] == "imagenet":
        train_tf, test_tf = imagenet_transforms(options["image_size"], mean, std, augment)
    else:
        train_tf, test_tf = cifar_transforms(options["image_size"], mean, std, augment, resize=True)
    train_dir = options.get("train_dir", "train")
    test_dir = options.get("test_dir", "val" if name != "cinic10" else "test")
    train = _image_folder(_split_dir(root, train_dir, name), train_tf, name)
    if name == "tiny_imagenet":
        test = _tiny_imagenet_val(root, train.class_to_idx, test_tf)
    else:
        test = _image_folder(_split_dir(root, test_dir, name), test_tf, name)
        if test.classes != train.classes:
            raise UserError(
                f"{name}: the class folders of {test_dir}/ ({len(test.classes)}) differ from those of "
                f"{train_dir}/ ({len(train.classes)}) under {root}"
            )
    desc = f"{name} from {os.path.abspath(root)} ({len(train.classes)} classes, {len(train)} train / {len(test)} test)"
    return DataSplits(train, test, len(train.classes), desc)


def _builder(name: str) -> Callable[..., DataSplits]:
    def build(
        cfg: Mapping[str, Any], options: Mapping[str, Any], main_first: Callable[[], Any]
    ) -> DataSplits:
        return _build(name, cfg, options)

    return build


_DIRS = {
    "train_dir": Field("train", str, "training split folder under dataset.root"),
    "test_dir": Field("val", str, "evaluation split folder under dataset.root"),
}
register_dataset(
    DatasetEntry(
        "imagenet",
        _builder("imagenet"),
        {**_DIRS, "image_size": Field(224, int, "crop size", check=positive)},
        "ImageNet in class-folder layout: root/train/<wnid>/*.JPEG, root/val/<wnid>/*.JPEG",
    )
)
register_dataset(
    DatasetEntry(
        "tiny_imagenet",
        _builder("tiny_imagenet"),
        doc="Tiny ImageNet (root = tiny-imagenet-200: train/<wnid>/images/*, val/ as shipped or reorganised)",
    )
)
register_dataset(
    DatasetEntry(
        "cinic10",
        _builder("cinic10"),
        {"test_dir": Field("test", str, "evaluation split folder (test or valid)")},
        "CINIC-10: root/train/<class>/*.png, root/test/<class>/*.png",
    )
)
register_dataset(
    DatasetEntry(
        "imagefolder",
        _builder("imagefolder"),
        {
            **_DIRS,
            "transform": Field("cifar", str, "augmentation style", choices=("cifar", "imagenet")),
            "image_size": Field(32, int, "image side after resizing", check=positive),
            "mean": Field(
                list(IMAGENET_MEAN), list, "per-channel mean (unless dataset.normalize)", item=float
            ),
            "std": Field(list(IMAGENET_STD), list, "per-channel std (unless dataset.normalize)", item=float),
        },
        "any root/<train_dir>/<class>/* and root/<test_dir>/<class>/* tree",
    )
)
