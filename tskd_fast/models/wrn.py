"""Wide ResNets (WRN-d-k) for CIFAR with the parameter names of RepDistiller's / mdistiller's
``wrn.py`` (``blockN.layer.i``, ``convShortcut``, a final ``bn1`` before the classifier)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from tskd_fast.models.base import FeatureDict, FeatureModel, global_pool, init_msra_conv_bn


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut.

    (B, C_in, H, W) -> (B, C_out, H/stride, W/stride). The output is the raw residual sum, with no
    activation: the next BN-ReLU belongs to the following block (or to the network head).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut: nn.Conv2d | None = None
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor, return_entry_bn: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x -> out, or (out, bn1(x)) where bn1(x) is this block's normalised input before ReLU."""
        normed = self.bn1(x)
        act = F.relu(normed)
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # With a projection the shortcut sees the activated input; otherwise the raw input.
        out = out + (x if self.convShortcut is None else self.convShortcut(act))
        return (out, normed) if return_entry_bn else out


class NetworkBlock(nn.Module):
    """One WRN stage: ``n`` blocks stored under ``.layer`` (the upstream key prefix)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate
                )
                for i in range(n)
            ]
        )

    def forward(self, x: Tensor, return_entry_bn: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, C_in, H, W) -> (B, C_out, H', W'); optionally also the first block's bn1(x)."""
        if not return_entry_bn:
            return self.layer(x)
        entry = None
        for i, block in enumerate(self.layer):
            if i == 0:
                x, entry = block(x, return_entry_bn=True)
            else:
                x = block(x)
        return x, entry


class WideResNet(FeatureModel):
    """WRN-depth-widen for CIFAR; depth = 6n + 4.

    Input (B, 3, 32, 32). feats: conv stem (B, 16, 32, 32), then (B, 16k, 32, 32), (B, 32k, 16, 16),
    (B, 64k, 8, 8); pooled_feat (B, 64k).

    Because the network is pre-activation, a stage output is a residual sum with no ReLU after it.
    As in RepDistiller / mdistiller / ReviewKD, ``feats`` holds those raw stage outputs and
    ``preact_feats`` holds the next BatchNorm applied to them (the BN that sits before the next ReLU:
    block2's first bn1, block3's first bn1, then the head ``bn1``). Unlike upstream, those BN outputs
    are taken from the forward pass itself instead of calling the BNs a second time, so in training
    mode running statistics are updated once per step, not twice. ``preact_feats[0]`` is the stem.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100, drop_rate: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, ch[0], 3, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], num_classes)
        self._stage_channels = [*ch, ch[3]]
        self._classifier_attr = "fc"
        init_msra_conv_bn(self)
        nn.init.zeros_(self.fc.bias)

    def _logits_and_features(self, x: Tensor, with_features: bool) -> tuple[Tensor, FeatureDict | None]:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        if with_features:
            f2, f1_pre = self.block2(f1, return_entry_bn=True)
            f3, f2_pre = self.block3(f2, return_entry_bn=True)
        else:
            f2 = self.block2(f1)
            f3 = self.block3(f2)
        f3_pre = self.bn1(f3)
        pooled = global_pool(F.relu(f3_pre))
        logits = self.fc(pooled)
        if not with_features:
            return logits, None
        return logits, FeatureDict(
            feats=[f0, f1, f2, f3], preact_feats=[f0, f1_pre, f2_pre, f3_pre], pooled_feat=pooled
        )


def _make(depth: int, widen: int) -> Callable[..., WideResNet]:
    def build(num_classes: int, drop_rate: float = 0.0) -> WideResNet:
        return WideResNet(depth, widen, num_classes=num_classes, drop_rate=drop_rate)

    build.__doc__ = f"WRN-{depth}-{widen} for CIFAR."
    return build


wrn_16_1 = _make(16, 1)
wrn_16_2 = _make(16, 2)
wrn_40_1 = _make(40, 1)
wrn_40_2 = _make(40, 2)
