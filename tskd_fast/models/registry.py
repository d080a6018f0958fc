"""Name -> constructor table of the zoo, with aliases and forgiving name matching."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from tskd_fast.models import (
    mobilenetv2,
    resnet_cifar,
    resnet_cifar_v2,
    resnet_imagenet,
    shufflenetv1,
    shufflenetv2,
    vgg,
    wrn,
)

# Canonical names: RepDistiller's `model_dict` spelling for CIFAR models, `imagenet_` prefix for
# the torchvision-layout ImageNet ResNets. Each constructor takes num_classes plus keyword options.
_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet8": resnet_cifar.resnet8,
    "resnet14": resnet_cifar.resnet14,
    "resnet20": resnet_cifar.resnet20,
    "resnet32": resnet_cifar.resnet32,
    "resnet44": resnet_cifar.resnet44,
    "resnet56": resnet_cifar.resnet56,
    "resnet110": resnet_cifar.resnet110,
    "resnet8x4": resnet_cifar.resnet8x4,
    "resnet32x4": resnet_cifar.resnet32x4,
    "ResNet18": resnet_cifar_v2.ResNet18,
    "ResNet34": resnet_cifar_v2.ResNet34,
    "ResNet50": resnet_cifar_v2.ResNet50,
    "wrn_16_1": wrn.wrn_16_1,
    "wrn_16_2": wrn.wrn_16_2,
    "wrn_40_1": wrn.wrn_40_1,
    "wrn_40_2": wrn.wrn_40_2,
    "vgg8": vgg.vgg8,
    "vgg11": vgg.vgg11,
    "vgg13": vgg.vgg13,
    "vgg16": vgg.vgg16,
    "vgg19": vgg.vgg19,
    "MobileNetV2": mobilenetv2.mobilenetv2_half,
    "ShuffleV1": shufflenetv1.ShuffleV1,
    "ShuffleV2": shufflenetv2.ShuffleV2,
    "imagenet_resnet18": resnet_imagenet.imagenet_resnet18,
    "imagenet_resnet34": resnet_imagenet.imagenet_resnet34,
    "imagenet_resnet50": resnet_imagenet.imagenet_resnet50,
}

# Other spellings people use. Unprefixed names always mean the CIFAR model, so `resnet50` is the
# CIFAR ResNet50 (RepDistiller's ResNet50 -> MobileNetV2 teacher), never the ImageNet one.
ALIASES: dict[str, str] = {
    "mobile_half": "MobileNetV2",
    "mobilenet_v2": "MobileNetV2",
    "shufflenet_v1": "ShuffleV1",
    "shufflenet_v2": "ShuffleV2",
    "cifar_resnet18": "ResNet18",
    "cifar_resnet34": "ResNet34",
    "cifar_resnet50": "ResNet50",
    "resnet18_imagenet": "imagenet_resnet18",
    "resnet34_imagenet": "imagenet_resnet34",
    "resnet50_imagenet": "imagenet_resnet50",
}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _build_lookup() -> dict[str, str]:
    lookup: dict[str, str] = {}
    for key, canonical in [*((n, n) for n in _MODELS), *ALIASES.items()]:
        norm = _normalise(key)
        # Case-folding must not merge two different models (e.g. a future `resnet50` vs `ResNet50`).
        if lookup.get(norm, canonical) != canonical:
            raise RuntimeError(f"model names {key!r} and {lookup[norm]!r} collide after normalisation")
        lookup[norm] = canonical
    return lookup


_LOOKUP = _build_lookup()


def list_models(include_aliases: bool = False) -> list[str]:
    """Canonical model names in registration order; with include_aliases, the aliases follow."""
    names = list(_MODELS)
    return names + list(ALIASES) if include_aliases else names


def resolve_name(name: str) -> str:
    """Canonical name for ``name`` (case-insensitive, ``-`` == ``_``, aliases allowed).

    Raises ValueError listing the valid names when nothing matches.
    """
    canonical = _LOOKUP.get(_normalise(name)) if isinstance(name, str) else None
    if canonical is None:
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join(_MODELS)} "
            f"(aliases: {', '.join(f'{a} -> {c}' for a, c in ALIASES.items())})"
        )
    return canonical


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Instantiate a zoo model with freshly initialised weights.

    Returns a module whose ``forward(x)`` gives logits (B, num_classes) and
    ``forward(x, with_features=True)`` gives ``(logits, FeatureDict)``; kwargs are model options
    (e.g. ``drop_rate`` for WRNs, ``zero_init_residual`` for the ResNet18/34/50 variants).
    """
    canonical = resolve_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return _MODELS[canonical](num_classes=num_classes, **kwargs)
