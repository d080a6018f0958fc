"""ShuffleNetV2 (1x) for CIFAR with the parameter names of RepDistiller's / mdistiller's
``ShuffleNetv2.py`` (a ``DownBlock`` at ``layerN.0`` with conv1..5, then basic units, a 1x1
``conv2``/``bn2`` head and a ``linear`` classifier)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tskd_fast.models.base import FeatureDict, FeatureModel, classify, run_stages
from tskd_fast.models.shufflenetv1 import channel_shuffle

# Stage widths (3 stages + head) and units per stage, by net size; RepDistiller's ShuffleV2 is 1.
SHUFFLENETV2_CONFIGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2.0: ((224, 488, 976, 2048), (3, 7, 3)),
}


class ShuffleV2Unit(nn.Module):
    """Channel split; one half goes through 1x1 -> depthwise 3x3 -> 1x1, then concat and shuffle.

    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor, return_preact: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x -> out, or (out, preact).

        preact is ``cat([x1, branch_before_relu])`` *without* the channel shuffle, exactly what
        upstream returns, so ``out == channel_shuffle(relu(preact), 2)`` rather than ``relu(preact)``.
        """
        half = x.shape[1] // 2
        x1, x2 = x[:, :half], x[:, half:]
        branch = F.relu(self.bn1(self.conv1(x2)))
        branch = self.bn2(self.conv2(branch))
        branch_pre = self.bn3(self.conv3(branch))
        out = channel_shuffle(torch.cat([x1, F.relu(branch_pre)], 1), 2)
        if return_preact:
            return out, torch.cat([x1, branch_pre], 1)
        return out


class ShuffleV2DownBlock(nn.Module):
    """Stride-2 unit with two branches; (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = out_ch // 2
        # Left branch: depthwise 3x3 (stride 2) -> 1x1.
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, stride=2, padding=1, groups=in_ch, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv2 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # Right branch: 1x1 -> depthwise 3x3 (stride 2) -> 1x1.
        self.conv3 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(FeatureModel):
    """ShuffleNetV2 for CIFAR: 1x1 stem (no downsampling), three stride-2 stages, 1x1 head conv.

    Input (B, 3, 32, 32); net size 1. feats: stem (B, 24, 32, 32), (B, 116, 16, 16),
    (B, 232, 8, 8), (B, 464, 4, 4); pooled_feat (B, 1024), after the head conv + BN + ReLU.
    ``preact_feats`` follow upstream: each stage's last unit returns its un-shuffled pre-ReLU concat
    (see ``ShuffleV2Unit.forward``); entry 0 is the post-ReLU stem.
    """

    def __init__(self, net_size: float = 1.0, num_classes: int = 100) -> None:
        super().__init__()
        if float(net_size) not in SHUFFLENETV2_CONFIGS:
            raise ValueError(f"net_size must be one of {sorted(SHUFFLENETV2_CONFIGS)}, got {net_size}")
        widths, num_blocks = SHUFFLENETV2_CONFIGS[float(net_size)]
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_ch = 24
        layers = []
        for out_ch, n in zip(widths[:3], num_blocks):
            layers.append(
                nn.Sequential(ShuffleV2DownBlock(in_ch, out_ch), *[ShuffleV2Unit(out_ch) for _ in range(n)])
            )
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3 = layers
        self.conv2 = nn.Conv2d(widths[2], widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)
        self._stage_channels = [24, *widths]
        self._classifier_attr = "linear"

    def _logits_and_features(self, x: Tensor, with_features: bool) -> tuple[Tensor, FeatureDict | None]:
        stem = F.relu(self.bn1(self.conv1(x)))
        x, feats, preacts = run_stages(stem, (self.layer1, self.layer2, self.layer3))
        return classify(F.relu(self.bn2(self.conv2(x))), self.linear, feats, preacts, with_features)


def ShuffleV2(num_classes: int, net_size: float = 1.0) -> ShuffleNetV2:
    """RepDistiller's ShuffleV2 (net size 1: widths 116/232/464, 1024-wide head)."""
    return ShuffleNetV2(net_size=net_size, num_classes=num_classes)
