"""CIFAR VGG with BatchNorm (RepDistiller registers the BN variants as vgg8/11/13/16/19) and the
parameter names of its ``vgg.py``: five ``blockN`` Sequentials of conv(+bias)/BN/ReLU and a single
``classifier`` Linear (no fully connected stack)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from tskd_fast.models.base import FeatureDict, FeatureModel, classify, init_msra_conv_bn

# Output widths of the convs in each of the five blocks.
VGG_CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _conv_block(widths: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_channels = w
    # The block ends at the last BN so its output is the pre-activation feature; the model applies
    # that ReLU itself. Indices of convs/BNs (0, 1, 3, 4, ...) thus match upstream keys.
    return nn.Sequential(*layers[:-1])


class VGG(FeatureModel):
    """VGG-BN for CIFAR.

    Input (B, 3, 32, 32). feats: block0 (B, 64, 32, 32), block1 (B, 128, 16, 16),
    block2 (B, 256, 8, 8), block3 (B, 512, 4, 4), block4 (B, 512, 4, 4); pooled_feat (B, 512).
    There is no max-pool between block3 and block4 except for 64x64 inputs (e.g. Tiny-ImageNet), where
    upstream adds one; this module keeps that rule so checkpoints behave identically.
    ``preact_feats`` are the block outputs before the ReLU (the last BN's output); entry 0 is the
    post-ReLU block0 output, as upstream returns it.
    """

    def __init__(self, cfg: list[list[int]], num_classes: int = 100) -> None:
        super().__init__()
        self.block0 = _conv_block(cfg[0], 3)
        self.block1 = _conv_block(cfg[1], cfg[0][-1])
        self.block2 = _conv_block(cfg[2], cfg[1][-1])
        self.block3 = _conv_block(cfg[3], cfg[2][-1])
        self.block4 = _conv_block(cfg[4], cfg[3][-1])
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        self._stage_channels = [c[-1] for c in cfg] + [cfg[4][-1]]
        self._classifier_attr = "classifier"
        init_msra_conv_bn(self, linear_std=0.01)

    def _logits_and_features(self, x: Tensor, with_features: bool) -> tuple[Tensor, FeatureDict | None]:
        pool_before_last = x.shape[2] == 64
        f0 = F.relu(self.block0(x))
        feats, preacts = [f0], [f0]
        x = f0
        for i, block in enumerate((self.block1, self.block2, self.block3, self.block4)):
            if i < 3 or pool_before_last:
                x = F.max_pool2d(x, 2, 2)
            pre = block(x)
            x = F.relu(pre)
            feats.append(x)
            preacts.append(pre)
        return classify(x, self.classifier, feats, preacts, with_features)


def _make(name: str) -> Callable[[int], VGG]:
    def build(num_classes: int) -> VGG:
        return VGG(VGG_CONFIGS[name], num_classes=num_classes)

    build.__doc__ = f"{name} with BatchNorm for CIFAR."
    return build


vgg8 = _make("vgg8")
vgg11 = _make("vgg11")
vgg13 = _make("vgg13")
vgg16 = _make("vgg16")
vgg19 = _make("vgg19")
