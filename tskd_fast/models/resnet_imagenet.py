"""ImageNet ResNet-18/34/50: torchvision's ``ResNet`` (identical modules and state_dict keys, so
torchvision weight files load unchanged) plus the zoo's feature API."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as TorchvisionResNet

from tskd_fast.models.base import FeatureDict, FeatureModel


def _block_preact(block: nn.Module, x: Tensor) -> Tensor:
    """The residual sum of a torchvision block before its final ReLU; (B, C_in, H, W) -> (B, C_out, H', W').

    torchvision applies that ReLU inside ``forward``, so the block is re-expressed here with its
    own submodules; ``relu(_block_preact(b, x))`` equals ``b(x)``.
    """
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    elif isinstance(block, BasicBlock):
        out = block.bn2(block.conv2(out))
    else:
        raise TypeError(f"unsupported block type {type(block).__name__}")
    return out + identity


class ImageNetResNet(FeatureModel, TorchvisionResNet):
    """torchvision ResNet with ``forward(x, with_features=False)``.

    Input (B, 3, H, W), e.g. 224x224; e = block expansion (1 or 4). feats: stem after conv1/bn1/ReLU
    and before the max-pool (B, 64, H/2, W/2), then (B, 64e, H/4, W/4), (B, 128e, H/8, W/8),
    (B, 256e, H/16, W/16), (B, 512e, H/32, W/32); pooled_feat (B, 512e). ``preact_feats`` are the same
    points before the ReLU (stem: the bn1 output), as mdistiller's ImageNet ResNet returns them.
    Without features the forward is torchvision's own. With features the last block of each stage is
    evaluated through ``_block_preact``, so forward hooks on those blocks do not fire in that mode.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(block, layers, num_classes=num_classes, **kwargs)
        e = block.expansion
        self._stage_channels = [64, 64 * e, 128 * e, 256 * e, 512 * e, 512 * e]
        self._classifier_attr = "fc"

    def _logits_and_features(self, x: Tensor, with_features: bool) -> tuple[Tensor, FeatureDict | None]:
        if not with_features:
            return self._forward_impl(x), None
        stem_pre = self.bn1(self.conv1(x))
        stem = F.relu(stem_pre)
        feats, preacts = [stem], [stem_pre]
        x = self.maxpool(stem)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            last = len(stage) - 1
            for i, block in enumerate(stage):
                if i < last:
                    x = block(x)
            pre = _block_preact(stage[last], x)
            x = F.relu(pre)
            feats.append(x)
            preacts.append(pre)
        pooled = self.avgpool(x).flatten(1)
        logits = self.fc(pooled)
        return logits, FeatureDict(feats=feats, preact_feats=preacts, pooled_feat=pooled)


def imagenet_resnet18(num_classes: int = 1000, **kwargs: Any) -> ImageNetResNet:
    """torchvision ResNet-18 layout; pooled_feat width 512. kwargs go to torchvision's ResNet."""
    return ImageNetResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)


def imagenet_resnet34(num_classes: int = 1000, **kwargs: Any) -> ImageNetResNet:
    """torchvision ResNet-34 layout; pooled_feat width 512. kwargs go to torchvision's ResNet."""
    return ImageNetResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


def imagenet_resnet50(num_classes: int = 1000, **kwargs: Any) -> ImageNetResNet:
    """torchvision ResNet-50 layout; pooled_feat width 2048. kwargs go to torchvision's ResNet."""
    return ImageNetResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)
