"""4-stage CIFAR ResNet-18/34/50 (64-wide 3x3 stem, no max-pool) with the parameter names of
RepDistiller's / mdistiller's ``resnetv2.py`` (``shortcut`` projections, ``linear`` classifier)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tskd_fast.models.base import (
    FeatureDict,
    FeatureModel,
    classify,
    init_msra_conv_bn,
    run_stages,
)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    # Identity has no parameters, so it adds no state_dict keys, like upstream's empty Sequential.
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlockV2(nn.Module):
    """3x3 -> 3x3 residual block; (B, C_in, H, W) -> (B, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor, return_preact: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x -> out, or (out, preact) where out = relu(preact)."""
        out = F.relu(self.bn1(self.conv1(x)))
        preact = self.bn2(self.conv2(out)) + self.shortcut(x)
        out = F.relu(preact)
        return (out, preact) if return_preact else out


class BottleneckV2(nn.Module):
    """1x1 -> 3x3 -> 1x1 block; (B, C_in, H, W) -> (B, 4 * planes, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: Tensor, return_preact: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x -> out, or (out, preact) where out = relu(preact)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        preact = self.bn3(self.conv3(out)) + self.shortcut(x)
        out = F.relu(preact)
        return (out, preact) if return_preact else out


class CifarResNetV2(FeatureModel):
    """CIFAR ResNet with four stages of widths 64, 128, 256, 512 (times the block expansion).

    Input (B, 3, 32, 32). feats: stem (B, 64, 32, 32), then (B, 64e, 32, 32), (B, 128e, 16, 16),
    (B, 256e, 8, 8), (B, 512e, 4, 4); pooled_feat (B, 512e). ``preact_feats[0]`` is the post-ReLU
    stem output, as upstream returns it.
    """

    def __init__(
        self,
        block: type[BasicBlockV2] | type[BottleneckV2],
        num_blocks: tuple[int, int, int, int],
        num_classes: int = 100,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        layers = []
        for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        self._stage_channels = [64] + [c * block.expansion for c in (64, 128, 256, 512, 512)]
        self._classifier_attr = "linear"
        init_msra_conv_bn(self)
        if zero_init_residual:
            # Residual branches start as zero so every block begins as an identity map.
            for m in self.modules():
                if isinstance(m, BottleneckV2):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlockV2):
                    nn.init.zeros_(m.bn2.weight)

    def _logits_and_features(self, x: Tensor, with_features: bool) -> tuple[Tensor, FeatureDict | None]:
        stem = F.relu(self.bn1(self.conv1(x)))
        x, feats, preacts = run_stages(stem, (self.layer1, self.layer2, self.layer3, self.layer4))
        return classify(x, self.linear, feats, preacts, with_features)


def ResNet18(num_classes: int, zero_init_residual: bool = False) -> CifarResNetV2:
    """CIFAR ResNet-18 (basic blocks 2-2-2-2); pooled_feat width 512."""
    return CifarResNetV2(BasicBlockV2, (2, 2, 2, 2), num_classes, zero_init_residual)


def ResNet34(num_classes: int, zero_init_residual: bool = False) -> CifarResNetV2:
    """CIFAR ResNet-34 (basic blocks 3-4-6-3); pooled_feat width 512."""
    return CifarResNetV2(BasicBlockV2, (3, 4, 6, 3), num_classes, zero_init_residual)


def ResNet50(num_classes: int, zero_init_residual: bool = False) -> CifarResNetV2:
    """CIFAR ResNet-50 (bottlenecks 3-4-6-3); pooled_feat width 2048."""
    return CifarResNetV2(BottleneckV2, (3, 4, 6, 3), num_classes, zero_init_residual)
