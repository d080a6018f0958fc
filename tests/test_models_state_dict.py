"""state_dict compatibility with RepDistiller / mdistiller CIFAR models and torchvision ResNets.

The expected layouts are written out here from the upstream constructors (RepDistiller
``models/resnet.py``, ``resnetv2.py``, ``wrn.py``, ``vgg.py``, ``mobilenetv2.py``,
``ShuffleNetv1.py``, ``ShuffleNetv2.py``; mdistiller's ``mdistiller/models/cifar/`` copies have the
same parameters), without using the zoo's code, so renaming or reshaping any layer fails a test.
Each model is also pinned by its total key count and parameter count for 100 classes.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from tskd_fast.models import build_model

Layout = dict[str, tuple[int, ...]]


def _conv(sd: Layout, key: str, out_ch: int, in_per_group: int, k: int, bias: bool = False) -> None:
    sd[f"{key}.weight"] = (out_ch, in_per_group, k, k)
    if bias:
        sd[f"{key}.bias"] = (out_ch,)


def _bn(sd: Layout, key: str, c: int) -> None:
    for s in ("weight", "bias", "running_mean", "running_var"):
        sd[f"{key}.{s}"] = (c,)
    sd[f"{key}.num_batches_tracked"] = ()


def _linear(sd: Layout, key: str, out_f: int, in_f: int) -> None:
    sd[f"{key}.weight"] = (out_f, in_f)
    sd[f"{key}.bias"] = (out_f,)


def repdistiller_resnet(depth: int, widths: list[int], nc: int) -> Layout:
    """resnet.py: conv1/bn1, layer1-3 of BasicBlocks with `downsample.{0,1}` projections, fc."""
    sd: Layout = {}
    _conv(sd, "conv1", widths[0], 3, 3)
    _bn(sd, "bn1", widths[0])
    n, inp = (depth - 2) // 6, widths[0]
    for s, planes in enumerate(widths[1:], start=1):
        stride = 1 if s == 1 else 2
        for b in range(n):
            p = f"layer{s}.{b}"
            _conv(sd, f"{p}.conv1", planes, inp, 3)
            _bn(sd, f"{p}.bn1", planes)
            _conv(sd, f"{p}.conv2", planes, planes, 3)
            _bn(sd, f"{p}.bn2", planes)
            if b == 0 and (stride != 1 or inp != planes):
                _conv(sd, f"{p}.downsample.0", planes, inp, 1)
                _bn(sd, f"{p}.downsample.1", planes)
            inp = planes
    _linear(sd, "fc", nc, widths[3])
    return sd


def repdistiller_resnet50(nc: int) -> Layout:
    """resnetv2.py ResNet50: Bottlenecks 3-4-6-3 with `shortcut.{0,1}` projections, `linear`."""
    sd: Layout = {}
    _conv(sd, "conv1", 64, 3, 3)
    _bn(sd, "bn1", 64)
    inp = 64
    for s, (planes, n, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1):
        for b in range(n):
            p = f"layer{s}.{b}"
            _conv(sd, f"{p}.conv1", planes, inp, 1)
            _bn(sd, f"{p}.bn1", planes)
            _conv(sd, f"{p}.conv2", planes, planes, 3)
            _bn(sd, f"{p}.bn2", planes)
            _conv(sd, f"{p}.conv3", 4 * planes, planes, 1)
            _bn(sd, f"{p}.bn3", 4 * planes)
            if b == 0 and (stride != 1 or inp != 4 * planes):
                _conv(sd, f"{p}.shortcut.0", 4 * planes, inp, 1)
                _bn(sd, f"{p}.shortcut.1", 4 * planes)
            inp = 4 * planes
    _linear(sd, "linear", nc, 2048)
    return sd


def repdistiller_wrn(depth: int, k: int, nc: int) -> Layout:
    """wrn.py: conv1, block{1,2,3}.layer.i (bn1, conv1, bn2, conv2, convShortcut), bn1, fc."""
    sd: Layout = {}
    ch = [16, 16 * k, 32 * k, 64 * k]
    _conv(sd, "conv1", 16, 3, 3)
    n = (depth - 4) // 6
    for s in (1, 2, 3):
        for b in range(n):
            inp = ch[s - 1] if b == 0 else ch[s]
            p = f"block{s}.layer.{b}"
            _bn(sd, f"{p}.bn1", inp)
            _conv(sd, f"{p}.conv1", ch[s], inp, 3)
            _bn(sd, f"{p}.bn2", ch[s])
            _conv(sd, f"{p}.conv2", ch[s], ch[s], 3)
            if inp != ch[s]:
                _conv(sd, f"{p}.convShortcut", ch[s], inp, 1)
    _bn(sd, "bn1", ch[3])
    _linear(sd, "fc", nc, ch[3])
    return sd


def repdistiller_vgg_bn(cfg: list[list[int]], nc: int) -> Layout:
    """vgg.py with batch_norm: blockN = [conv(bias), bn, relu]* without the last relu; classifier."""
    sd: Layout = {}
    inp = 3
    for s, widths in enumerate(cfg):
        for j, w in enumerate(widths):
            _conv(sd, f"block{s}.{3 * j}", w, inp, 3, bias=True)
            _bn(sd, f"block{s}.{3 * j + 1}", w)
            inp = w
    _linear(sd, "classifier", nc, 512)
    return sd


def repdistiller_mobile_half(nc: int) -> Layout:
    """mobilenetv2.py mobile_half (T=6, width 0.5): conv1.{0,1}, blocks.i.j.conv.{0,1,3,4,6,7}, conv2, classifier.0."""
    sd: Layout = {}
    _conv(sd, "conv1.0", 16, 3, 3)
    _bn(sd, "conv1.1", 16)
    inp = 16
    settings = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
    for i, (t, c, n) in enumerate(settings):
        out = c // 2
        for j in range(n):
            p, hid = f"blocks.{i}.{j}.conv", inp * t
            _conv(sd, f"{p}.0", hid, inp, 1)
            _bn(sd, f"{p}.1", hid)
            _conv(sd, f"{p}.3", hid, 1, 3)
            _bn(sd, f"{p}.4", hid)
            _conv(sd, f"{p}.6", out, hid, 1)
            _bn(sd, f"{p}.7", out)
            inp = out
    _conv(sd, "conv2.0", 1280, 160, 1)
    _bn(sd, "conv2.1", 1280)
    _linear(sd, "classifier.0", nc, 1280)
    return sd


def repdistiller_shufflev1(nc: int) -> Layout:
    """ShuffleNetv1.py ShuffleV1: 1x1 stem, layer{1,2,3}.i (conv1-3, bn1-3), linear."""
    sd: Layout = {}
    _conv(sd, "conv1", 24, 3, 1)
    _bn(sd, "bn1", 24)
    inp = 24
    for s, (planes, n) in enumerate([(240, 4), (480, 8), (960, 4)], start=1):
        for b in range(n):
            out = planes - inp if b == 0 else planes
            mid, g1 = out // 4, (1 if inp == 24 else 3)
            p = f"layer{s}.{b}"
            _conv(sd, f"{p}.conv1", mid, inp // g1, 1)
            _bn(sd, f"{p}.bn1", mid)
            _conv(sd, f"{p}.conv2", mid, 1, 3)
            _bn(sd, f"{p}.bn2", mid)
            _conv(sd, f"{p}.conv3", out, mid // 3, 1)
            _bn(sd, f"{p}.bn3", out)
            inp = planes
    _linear(sd, "linear", nc, 960)
    return sd


def repdistiller_shufflev2(nc: int) -> Layout:
    """ShuffleNetv2.py ShuffleV2 (size 1): layerN.0 DownBlock (conv1-5/bn1-5), basic units, conv2/bn2, linear."""
    sd: Layout = {}
    _conv(sd, "conv1", 24, 3, 1)
    _bn(sd, "bn1", 24)
    inp = 24
    for s, (out, n) in enumerate([(116, 3), (232, 7), (464, 3)], start=1):
        mid, p = out // 2, f"layer{s}.0"
        _conv(sd, f"{p}.conv1", inp, 1, 3)
        _bn(sd, f"{p}.bn1", inp)
        _conv(sd, f"{p}.conv2", mid, inp, 1)
        _bn(sd, f"{p}.bn2", mid)
        _conv(sd, f"{p}.conv3", mid, inp, 1)
        _bn(sd, f"{p}.bn3", mid)
        _conv(sd, f"{p}.conv4", mid, 1, 3)
        _bn(sd, f"{p}.bn4", mid)
        _conv(sd, f"{p}.conv5", mid, mid, 1)
        _bn(sd, f"{p}.bn5", mid)
        for b in range(1, n + 1):
            p = f"layer{s}.{b}"
            _conv(sd, f"{p}.conv1", mid, mid, 1)
            _bn(sd, f"{p}.bn1", mid)
            _conv(sd, f"{p}.conv2", mid, 1, 3)
            _bn(sd, f"{p}.bn2", mid)
            _conv(sd, f"{p}.conv3", mid, mid, 1)
            _bn(sd, f"{p}.bn3", mid)
        inp = out
    _conv(sd, "conv2", 1024, 464, 1)
    _bn(sd, "bn2", 1024)
    _linear(sd, "linear", nc, 1024)
    return sd


_VGG13 = [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]
_VGG8 = [[64], [128], [256], [512], [512]]

# name -> (expected layout, number of keys, number of parameters) for 100 classes. The counts were
# worked out from the upstream constructors and agree with the sizes quoted in the KD literature
# (e.g. resnet32x4 7.43M, wrn_40_2 2.26M, vgg13 9.46M, MobileNetV2 0.81M, ResNet50 23.71M).
CASES = {
    "resnet8": (repdistiller_resnet(8, [16, 16, 32, 64], 100), 56, 83_892),
    "resnet56": (repdistiller_resnet(56, [16, 16, 32, 64], 100), 344, 861_620),
    "resnet110": (repdistiller_resnet(110, [16, 16, 32, 64], 100), 668, 1_736_564),
    "resnet8x4": (repdistiller_resnet(8, [32, 64, 128, 256], 100), 62, 1_233_540),
    "resnet32x4": (repdistiller_resnet(32, [32, 64, 128, 256], 100), 206, 7_433_860),
    "ResNet50": (repdistiller_resnet50(100), 320, 23_705_252),
    "wrn_16_2": (repdistiller_wrn(16, 2, 100), 83, 703_284),
    "wrn_40_1": (repdistiller_wrn(40, 1, 100), 226, 569_780),
    "wrn_40_2": (repdistiller_wrn(40, 2, 100), 227, 2_255_156),
    "vgg8": (repdistiller_vgg_bn(_VGG8, 100), 37, 3_965_028),
    "vgg13": (repdistiller_vgg_bn(_VGG13, 100), 72, 9_462_180),
    "MobileNetV2": (repdistiller_mobile_half(100), 320, 812_836),
    "ShuffleV1": (repdistiller_shufflev1(100), 296, 949_258),
    "ShuffleV2": (repdistiller_shufflev2(100), 338, 1_355_528),
}

# A few literal upstream keys per model, readable without running the generators above.
SPOT_KEYS = {
    "resnet8x4": {
        "layer1.0.downsample.0.weight": (64, 32, 1, 1),
        "layer3.0.conv2.weight": (256, 256, 3, 3),
        "fc.weight": (100, 256),
    },
    "resnet32x4": {
        "layer3.4.bn2.running_var": (256,),
        "layer2.0.downsample.1.weight": (128,),
        "fc.bias": (100,),
    },
    "resnet56": {"layer1.8.conv2.weight": (16, 16, 3, 3), "layer3.0.downsample.0.weight": (64, 32, 1, 1)},
    "wrn_40_2": {
        "block1.layer.0.convShortcut.weight": (32, 16, 1, 1),
        "block3.layer.5.bn1.weight": (128,),
        "bn1.weight": (128,),
    },
    "vgg13": {
        "block0.0.bias": (64,),
        "block0.4.running_mean": (64,),
        "block4.3.weight": (512, 512, 3, 3),
        "classifier.weight": (100, 512),
    },
    "MobileNetV2": {
        "blocks.0.0.conv.0.weight": (16, 16, 1, 1),
        "blocks.6.0.conv.7.weight": (160,),
        "classifier.0.weight": (100, 1280),
    },
    "ShuffleV1": {
        "layer1.0.conv1.weight": (54, 24, 1, 1),
        "layer1.0.conv3.weight": (216, 18, 1, 1),
        "linear.weight": (100, 960),
    },
    "ShuffleV2": {
        "layer1.0.conv1.weight": (24, 1, 3, 3),
        "layer2.7.conv3.weight": (116, 116, 1, 1),
        "conv2.weight": (1024, 464, 1, 1),
    },
    "ResNet50": {
        "layer1.0.shortcut.0.weight": (256, 64, 1, 1),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "linear.weight": (100, 2048),
    },
}


def _layout(model: torch.nn.Module) -> Layout:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_matches_repdistiller_layout(name):
    expected, n_keys, n_params = CASES[name]
    got = _layout(build_model(name, 100))
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    wrong = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not wrong, wrong
    assert len(got) == n_keys
    n = sum(
        torch.Size(s).numel()
        for k, s in got.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert n == n_params
    for key, shape in SPOT_KEYS.get(name, {}).items():
        assert got[key] == shape, key


def test_param_count_via_parameters():
    # The same counts through nn.Module.parameters(), i.e. no parameter is hidden outside state_dict.
    assert sum(p.numel() for p in build_model("resnet8x4", 100).parameters()) == 1_233_540
    assert sum(p.numel() for p in build_model("wrn_40_2", 100).parameters()) == 2_255_156


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_imagenet_resnet_matches_torchvision(depth):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=10).eval()
    ours = build_model(f"imagenet_resnet{depth}", 10).eval()
    assert _layout(ours) == _layout(ref)
    # Loading torchvision weights must reproduce torchvision's outputs, with or without features.
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(ours(x), want)
        logits, feats = ours(x, with_features=True)
        torch.testing.assert_close(logits, want)
        h = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        for layer in (ref.layer1, ref.layer2, ref.layer3, ref.layer4):
            h = layer(h)
        torch.testing.assert_close(feats["feats"][-1], h)
        torch.testing.assert_close(feats["pooled_feat"], torch.flatten(ref.avgpool(h), 1))
