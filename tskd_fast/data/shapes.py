"""The embedded ``shapes`` dataset as a registry entry (see tskd_fast.data.embedded for what it is)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from tskd_fast.data.embedded import SHAPES, TEXTURES, ShapesSpec, generate
from tskd_fast.data.registry import DatasetEntry, DataSplits, register_dataset
from tskd_fast.data.tensor_dataset import AugmentedTensorDataset
from tskd_fast.data.transforms import normalisation
from tskd_fast.errors import ConfigError
from tskd_fast.schema import Field, non_negative, positive


@functools.lru_cache(maxsize=2)
def _arrays(spec: ShapesSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, test images, test labels); images (N, 3, 32, 32) uint8.

    Cached so that the stages of one run (teacher, student, baseline) generate the data once.
    """
    out = []
    for split in ("train", "test"):
        images, labels = generate(spec, split)
        out += [torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)]
    return out[0], out[1], out[2], out[3]


def build_shapes(
    cfg: Mapping[str, Any], options: Mapping[str, Any], main_first: Callable[[], Any]
) -> DataSplits:
    try:
        spec = ShapesSpec(**options)
    except ValueError as exc:
        raise ConfigError(f"dataset.shapes: {exc}") from None
    x_train, y_train, x_test, y_test = _arrays(spec)
    # Per-channel statistics of the training images (unless dataset.normalize says otherwise), so
    # inputs are normalised as for CIFAR.
    flat = x_train.permute(1, 0, 2, 3).reshape(3, -1).float() / 255.0
    mean, std = normalisation(cfg["normalize"], (flat.mean(1).tolist(), flat.std(1).tolist()))
    train = AugmentedTensorDataset(x_train, y_train, mean, std, augment=cfg["augment"])
    test = AugmentedTensorDataset(x_test, y_test, mean, std, augment=False)
    desc = (
        f"shapes (embedded synthetic, {spec.num_classes} classes = {spec.num_shapes} shapes x "
        f"{spec.num_textures} textures, {spec.train_size} train / {spec.test_size} test images, seed {spec.seed})"
    )
    return DataSplits(train, test, spec.num_classes, desc)


register_dataset(
    DatasetEntry(
        "shapes",
        build_shapes,
        {
            "num_shapes": Field(ShapesSpec.num_shapes, int, f"object shapes, 1..{len(SHAPES)}"),
            "num_textures": Field(ShapesSpec.num_textures, int, f"fill textures, 1..{len(TEXTURES)}"),
            "train_size": Field(ShapesSpec.train_size, int, "training images", check=positive),
            "test_size": Field(ShapesSpec.test_size, int, "test images", check=positive),
            "label_noise": Field(ShapesSpec.label_noise, float, "fraction of random training labels"),
            "clutter": Field(ShapesSpec.clutter, float, "background/distractor strength", check=non_negative),
            "seed": Field(ShapesSpec.seed, int, "generator seed (part of the dataset's identity)"),
        },
        "embedded synthetic CIFAR-shaped dataset (no download; for trying things out)",
    )
)
