"""MobileNetV2 for CIFAR as used in the KD literature: RepDistiller's ``mobile_half`` (expansion 6,
width multiplier 0.5, 1280-wide head), with its parameter names (``conv1.{0,1}``,
``blocks.i.j.conv.k``, ``conv2.{0,1}``, ``classifier.0``)."""

from __future__ import annotations

from torch import Tensor, nn

from tskd_fast.models.base import FeatureDict, FeatureModel, global_pool, init_msra_conv_bn


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), with a residual when shapes allow.

    (B, C_in, H, W) -> (B, C_out, H/stride, W/stride). The expansion conv is present even for
    expand_ratio 1, as upstream has it.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, H, W) -> (B, C_out, H/stride, W/stride); no activation on the output."""
        out = self.conv(x)
        return x + out if self.use_residual else out


# (expansion, base width, repeats, first stride) per block group; expansion None means "use T".
_SETTINGS: list[tuple[int | None, int, int, int]] = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]


class MobileNetV2(FeatureModel):
    """MobileNetV2 with expansion ``T`` and width multiplier ``width_mult`` for 32x32 inputs.

    Input (B, 3, 32, 32), shapes for the default T=6, width 0.5. feats: stem (B, 16, 16, 16), then
    the outputs of block groups 1, 2, 4 and 6: (B, 12, 16, 16), (B, 16, 8, 8), (B, 48, 4, 4),
    (B, 160, 2, 2); pooled_feat (B, 1280), after the 1x1 head conv.

    Block outputs are linear bottlenecks (no ReLU follows them), so, as in RepDistiller,
    ``preact_feats`` is the same list as ``feats``.
    """

    def __init__(self, num_classes: int = 100, expansion: int = 6, width_mult: float = 0.5) -> None:
        super().__init__()
        in_ch = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, in_ch, 3, 2)
        groups = []
        for t, c, n, s in _SETTINGS:
            out_ch = int(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(
                    InvertedResidual(in_ch, out_ch, s if i == 0 else 1, expansion if t is None else t)
                )
                in_ch = out_ch
            groups.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(groups)
        # The head stays 1280 wide for width_mult <= 1 (the RepDistiller convention).
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_ch, last, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        stage_ch = [int(32 * width_mult)] + [int(c * width_mult) for c in (24, 32, 96, 320)]
        self._stage_channels = [*stage_ch, last]
        self._classifier_attr = "classifier"
        init_msra_conv_bn(self, linear_std=0.01)

    def _logits_and_features(self, x: Tensor, with_features: bool) -> tuple[Tensor, FeatureDict | None]:
        x = self.conv1(x)
        feats = [x]
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in (1, 2, 4, 6):
                feats.append(x)
        pooled = global_pool(self.conv2(x))
        logits = self.classifier(pooled)
        if not with_features:
            return logits, None
        return logits, FeatureDict(feats=feats, preact_feats=list(feats), pooled_feat=pooled)


def mobilenetv2_half(num_classes: int) -> MobileNetV2:
    """RepDistiller's ``mobile_half``: MobileNetV2, T=6, width 0.5 (registered as MobileNetV2)."""
    return MobileNetV2(num_classes=num_classes, expansion=6, width_mult=0.5)
