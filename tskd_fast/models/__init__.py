"""Teacher / student model zoo for distillation on CIFAR-sized (3x32x32) and ImageNet inputs.

Every CIFAR model has exactly the state_dict keys and shapes of the model of the same name in
RepDistiller / mdistiller, so their teacher checkpoints load with ``strict=True``; the ImageNet
ResNets are torchvision's ``ResNet`` and load torchvision weight files.

Names (``list_models()``; matching ignores case and treats ``-`` as ``_``):

* CIFAR, RepDistiller's ``model_dict`` spelling: ``resnet8, resnet14, resnet20, resnet32, resnet44,
  resnet56, resnet110, resnet8x4, resnet32x4`` (``resnet.py``); ``ResNet18, ResNet34, ResNet50``
  (``resnetv2.py``: 4 stages, 3x3 stem); ``wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2``;
  ``vgg8, vgg11, vgg13, vgg16, vgg19`` (the BatchNorm variants); ``MobileNetV2`` (RepDistiller's
  ``mobile_half``: T=6, width 0.5); ``ShuffleV1``; ``ShuffleV2``.
* ImageNet (torchvision layout): ``imagenet_resnet18, imagenet_resnet34, imagenet_resnet50``.
* Aliases: ``mobile_half``/``mobilenet_v2`` -> MobileNetV2, ``shufflenet_v1`` -> ShuffleV1,
  ``shufflenet_v2`` -> ShuffleV2, ``cifar_resnet18/34/50`` -> ResNet18/34/50, and
  ``resnet18/34/50_imagenet`` -> imagenet_resnet18/34/50. An unprefixed name is always the CIFAR
  model: ``resnet50`` (any case) is the CIFAR ResNet50; ImageNet models always carry ``imagenet``.

Feature API, identical for every model:

* ``model(x)`` -> logits (B, num_classes).
* ``model(x, with_features=True)`` -> ``(logits, feats)``, ``feats`` a dict (``FeatureDict``):
  ``"feats"``: ``[f0, ..., fK]``, the stem output followed by each stage's output after its final
  activation, each (B, C_i, H_i, W_i); ``"preact_feats"``: the same points before that activation
  (same shapes; per-family details, which follow RepDistiller/mdistiller, are in each class
  docstring: e.g. for WRN it is the next BatchNorm applied to the stage output, for MobileNetV2 it
  equals ``feats``); ``"pooled_feat"``: (B, C_last), the pooled vector fed to the classifier, so
  ``model.get_classifier()(pooled_feat) == logits``.
* ``model.stage_channels()`` -> ``[C(f0), ..., C(fK), C_last]``: the channel count of every
  ``feats`` entry followed by the width of ``pooled_feat`` (length ``len(feats) + 1``).
* ``model.get_classifier()`` -> the final Linear (or Sequential holding it).

``load_checkpoint(model, path)`` loads RepDistiller/mdistiller-style checkpoints
(``{'model': state_dict, 'epoch': ..., ...}``), ``{'state_dict': ...}`` or raw state_dicts.
"""

from tskd_fast.models.base import FeatureDict, FeatureModel
from tskd_fast.models.checkpoint import extract_state_dict, load_checkpoint
from tskd_fast.models.registry import ALIASES, build_model, list_models, resolve_name

__all__ = [
    "ALIASES",
    "FeatureDict",
    "FeatureModel",
    "build_model",
    "extract_state_dict",
    "list_models",
    "load_checkpoint",
    "resolve_name",
]
