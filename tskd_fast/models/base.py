"""Shared feature API of the model zoo: the base class, the feature dict and stage helpers."""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import Tensor, nn


class FeatureDict(TypedDict):
    """What ``model(x, with_features=True)`` returns next to the logits.

    feats: ``[f0, f1, ..., fK]``, each (B, C_i, H_i, W_i): the stem output followed by each stage's
        output after its final activation.
    preact_feats: the same stages before that activation; same shapes as ``feats``.
    pooled_feat: (B, C_last), the globally pooled feature the classifier consumes.
    """

    feats: list[Tensor]
    preact_feats: list[Tensor]
    pooled_feat: Tensor


class FeatureModel(nn.Module):
    """Base class of every zoo model.

    Subclasses implement ``_logits_and_features`` and set ``_stage_channels`` and
    ``_classifier_attr``. ``with_features`` is a keyword of ``forward`` itself (rather than a
    separate method) so that DistributedDataParallel, which only hooks ``forward``, keeps working.
    """

    _stage_channels: list[int]
    _classifier_attr: str

    def forward(self, x: Tensor, with_features: bool = False) -> Tensor | tuple[Tensor, FeatureDict]:
        """x (B, 3, H, W) -> logits (B, num_classes), or (logits, FeatureDict) with features."""
        logits, feats = self._logits_and_features(x, with_features)
        if with_features:
            assert feats is not None
            return logits, feats
        return logits

    def _logits_and_features(self, x: Tensor, with_features: bool) -> tuple[Tensor, FeatureDict | None]:
        raise NotImplementedError

    def stage_channels(self) -> list[int]:
        """Channel counts ``[C(f0), ..., C(fK), C(pooled_feat)]``: one per ``feats`` entry, then the
        width of ``pooled_feat`` as the last entry (so ``len == len(feats) + 1``)."""
        return list(self._stage_channels)

    def get_classifier(self) -> nn.Module:
        """The final layer mapping pooled_feat (B, C_last) to logits (B, num_classes)."""
        return getattr(self, self._classifier_attr)

    @property
    def num_classes(self) -> int:
        """Number of output classes (the classifier's output width)."""
        clf = self.get_classifier()
        linear = (
            clf if isinstance(clf, nn.Linear) else [m for m in clf.modules() if isinstance(m, nn.Linear)][-1]
        )
        return linear.out_features


def run_stage(stage: nn.Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run a stage whose last block accepts ``return_preact=True``.

    x (B, C_in, H, W) -> (out, preact), both (B, C_out, H', W'). The blocks are called through
    ``__call__`` so that hooks registered on them still fire.
    """
    last = len(stage) - 1
    for i, block in enumerate(stage):
        if i < last:
            x = block(x)
    return stage[last](x, return_preact=True)


def run_stages(x: Tensor, stages: tuple[nn.Sequential, ...]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The stem output x (B, C0, H, W) through ``stages`` (each by run_stage).

    Returns (last stage output, feats, preact_feats), both lists starting with the stem output.
    """
    feats, preacts = [x], [x]
    for stage in stages:
        x, pre = run_stage(stage, x)
        feats.append(x)
        preacts.append(pre)
    return x, feats, preacts


def classify(
    final: Tensor,
    classifier: nn.Module,
    feats: list[Tensor],
    preacts: list[Tensor],
    with_features: bool,
) -> tuple[Tensor, FeatureDict | None]:
    """Pool the final map (B, C, H, W), apply the classifier: (logits, FeatureDict or None)."""
    pooled = global_pool(final)
    logits = classifier(pooled)
    if not with_features:
        return logits, None
    return logits, FeatureDict(feats=feats, preact_feats=preacts, pooled_feat=pooled)


def global_pool(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C) spatial mean.

    Upstream CIFAR models use fixed-size average pools (e.g. ``AvgPool2d(8)``) that cover exactly
    the final map of a 32x32 input; a global mean gives the same numbers there and also works for
    other input sizes.
    """
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def init_msra_conv_bn(model: nn.Module, linear_std: float | None = None) -> None:
    """He-normal (fan_out) convs with zero bias, unit/zero BatchNorm, and optionally
    N(0, linear_std) Linear weights with zero bias: the init used by the WRN/VGG/MobileNetV2 upstream
    code. Only the initial values depend on this; checkpoints overwrite them."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
