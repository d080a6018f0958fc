"""CIFAR ResNets of the resnet20/32/56/110 family (3 stages, basic blocks), including the wide
``x4`` variants, with the parameter names of RepDistiller's / mdistiller's ``resnet.py``."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from tskd_fast.models.base import (
    FeatureDict,
    FeatureModel,
    classify,
    init_msra_conv_bn,
    run_stages,
)


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # The projection is named `downsample` (a Sequential of conv, bn) to match upstream keys.
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor, return_preact: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, C_in, H, W) -> out, or (out, preact) where out = relu(preact)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        preact = out + identity
        out = F.relu(preact)
        return (out, preact) if return_preact else out


def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
    """n basic blocks; only the first one changes width / resolution."""
    blocks = [CifarBasicBlock(in_planes, planes, stride)]
    blocks += [CifarBasicBlock(planes, planes) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


class CifarResNet(FeatureModel):
    """3-stage CIFAR ResNet; depth = 6n + 2 with n basic blocks per stage.

    Input (B, 3, 32, 32). feats: stem (B, w0, 32, 32), stages (B, w1, 32, 32), (B, w2, 16, 16),
    (B, w3, 8, 8); pooled_feat (B, w3). ``preact_feats[0]`` is the (post-ReLU) stem output, as
    upstream returns it.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = _stage(widths[0], widths[1], n, stride=1)
        self.layer2 = _stage(widths[1], widths[2], n, stride=2)
        self.layer3 = _stage(widths[2], widths[3], n, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)
        self._stage_channels = [*widths, widths[3]]
        self._classifier_attr = "fc"
        init_msra_conv_bn(self)

    def _logits_and_features(self, x: Tensor, with_features: bool) -> tuple[Tensor, FeatureDict | None]:
        stem = F.relu(self.bn1(self.conv1(x)))
        x, feats, preacts = run_stages(stem, (self.layer1, self.layer2, self.layer3))
        return classify(x, self.fc, feats, preacts, with_features)


def _make(depth: int, widths: tuple[int, int, int, int]) -> Callable[[int], CifarResNet]:
    def build(num_classes: int) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes=num_classes)

    build.__doc__ = f"CIFAR ResNet-{depth} with stage widths {widths}."
    return build


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)

resnet8 = _make(8, _NARROW)
resnet14 = _make(14, _NARROW)
resnet20 = _make(20, _NARROW)
resnet32 = _make(32, _NARROW)
resnet44 = _make(44, _NARROW)
resnet56 = _make(56, _NARROW)
resnet110 = _make(110, _NARROW)
resnet8x4 = _make(8, _WIDE)
resnet32x4 = _make(32, _WIDE)
