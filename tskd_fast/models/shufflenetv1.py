"""ShuffleNetV1 (groups=3) for CIFAR with the parameter names of RepDistiller's / mdistiller's
``ShuffleNetv1.py`` (``layerN.i.conv1..3``, ``bn1..3``, a ``linear`` classifier)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tskd_fast.models.base import FeatureDict, FeatureModel, classify, run_stages


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W) with channels reordered from (groups, C/g) to (C/g, groups)."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1, plus a shortcut.

    stride 1: (B, C, H, W) -> (B, C, H, W), residual sum. stride 2: (B, C_in, H, W) ->
    (B, C_in + out_planes, H/2, W/2), the branch concatenated with an average-pooled shortcut.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        # The first unit sees the 24-channel stem, which is not divisible by 3 groups, hence 1 group.
        self.first_groups = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward(self, x: Tensor, return_preact: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x -> out, or (out, preact) where out = relu(preact)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            preact = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        else:
            preact = out + x
        out = F.relu(preact)
        return (out, preact) if return_preact else out


class ShuffleNetV1(FeatureModel):
    """ShuffleNetV1 for CIFAR: 1x1 stem (no downsampling) and three stride-2 stages.

    Input (B, 3, 32, 32); default config. feats: stem (B, 24, 32, 32), (B, 240, 16, 16),
    (B, 480, 8, 8), (B, 960, 4, 4); pooled_feat (B, 960). ``preact_feats`` are the stage outputs
    before the last unit's ReLU; entry 0 is the post-ReLU stem, as upstream returns it.
    """

    def __init__(
        self,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_planes = 24
        layers = []
        for planes, n in zip(out_planes, num_blocks):
            # The stride-2 unit concatenates its input, so its branch only produces the difference.
            units = [ShuffleV1Unit(in_planes, planes - in_planes, 2, groups)]
            units += [ShuffleV1Unit(planes, planes, 1, groups) for _ in range(n - 1)]
            layers.append(nn.Sequential(*units))
            in_planes = planes
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(out_planes[2], num_classes)
        self._stage_channels = [24, *out_planes, out_planes[2]]
        self._classifier_attr = "linear"

    def _logits_and_features(self, x: Tensor, with_features: bool) -> tuple[Tensor, FeatureDict | None]:
        stem = F.relu(self.bn1(self.conv1(x)))
        x, feats, preacts = run_stages(stem, (self.layer1, self.layer2, self.layer3))
        return classify(x, self.linear, feats, preacts, with_features)


def ShuffleV1(num_classes: int) -> ShuffleNetV1:
    """RepDistiller's ShuffleV1: out planes (240, 480, 960), units (4, 8, 4), groups 3."""
    return ShuffleNetV1(num_classes=num_classes)
