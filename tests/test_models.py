"""Model zoo: feature API of every registered model, and the registry."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from tskd_fast.models import build_model, list_models, resolve_name
from tskd_fast.models.shufflenetv1 import channel_shuffle

CIFAR_MODELS = [
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "vgg8",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "MobileNetV2",
    "ShuffleV1",
    "ShuffleV2",
]
IMAGENET_MODELS = ["imagenet_resnet18", "imagenet_resnet34", "imagenet_resnet50"]

# Spatial size of each `feats` entry for the test input (32x32 CIFAR, 64x64 ImageNet).
_SPATIAL = {
    "resnet": [32, 32, 16, 8],
    "ResNet": [32, 32, 16, 8, 4],
    "wrn": [32, 32, 16, 8],
    "vgg": [32, 16, 8, 4, 4],
    "MobileNetV2": [16, 16, 8, 4, 2],
    "Shuffle": [32, 16, 8, 4],
    "imagenet": [32, 16, 8, 4, 2],
}


def _expected_spatial(name: str) -> list[int]:
    return next(v for k, v in _SPATIAL.items() if name.startswith(k))


@functools.cache
def _eval_model(name: str, num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes).eval()


def _input(name: str, batch: int = 2, seed: int = 1) -> torch.Tensor:
    size = 64 if name.startswith("imagenet") else 32
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_list_models_is_the_documented_set():
    assert list_models() == CIFAR_MODELS + IMAGENET_MODELS
    assert {"mobile_half", "mobilenet_v2", "shufflenet_v1", "shufflenet_v2"} <= set(
        list_models(include_aliases=True)
    )


@pytest.mark.parametrize("name", CIFAR_MODELS + IMAGENET_MODELS)
def test_forward_and_feature_api(name):
    model = _eval_model(name)
    x = _input(name)
    with torch.no_grad():
        logits = model(x)
        logits_f, out = model(x, with_features=True)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits_f, logits)

    feats, preacts, pooled = out["feats"], out["preact_feats"], out["pooled_feat"]
    channels = model.stage_channels()
    assert len(feats) == len(preacts) == len(channels) - 1
    assert [f.shape[1] for f in feats] == channels[:-1]
    assert pooled.shape == (2, channels[-1])
    spatial = _expected_spatial(name)
    for f, p, s in zip(feats, preacts, spatial):
        assert f.shape == (f.shape[0], f.shape[1], s, s) and f.shape[0] == 2
        assert p.shape == f.shape
    assert len(spatial) == len(feats)
    # The pooled feature is exactly what the classifier consumes.
    torch.testing.assert_close(model.get_classifier()(pooled), logits)
    assert model.num_classes == 10


@pytest.mark.parametrize(
    "name",
    [
        "resnet20",
        "resnet8x4",
        "ResNet18",
        "ResNet50",
        "vgg8",
        "ShuffleV1",
        "imagenet_resnet18",
        "imagenet_resnet50",
    ],
)
def test_feats_are_relu_of_preact(name):
    model = _eval_model(name)
    with torch.no_grad():
        _, out = model(_input(name), with_features=True)
    first = 0 if name.startswith("imagenet") else 1  # CIFAR models report the post-ReLU stem for both
    for f, p in list(zip(out["feats"], out["preact_feats"]))[first:]:
        assert (p < 0).any(), "a pre-activation should have negative entries"
        torch.testing.assert_close(f, F.relu(p))
    if name.startswith("ResNet") or name.startswith("resnet"):
        assert out["preact_feats"][0] is out["feats"][0]


def test_wrn_preact_is_next_batchnorm():
    model = _eval_model("wrn_16_2")
    with torch.no_grad():
        _, out = model(_input("wrn_16_2"), with_features=True)
        f, p = out["feats"], out["preact_feats"]
        # RepDistiller's definition: the BN that precedes the next ReLU, applied to the stage output.
        torch.testing.assert_close(p[1], model.block2.layer[0].bn1(f[1]))
        torch.testing.assert_close(p[2], model.block3.layer[0].bn1(f[2]))
        torch.testing.assert_close(p[3], model.bn1(f[3]))
        torch.testing.assert_close(out["pooled_feat"], F.relu(p[3]).mean((2, 3)))


def test_wrn_features_update_batchnorm_stats_once():
    torch.manual_seed(0)
    model = build_model("wrn_16_1", 10).train()
    model(_input("wrn_16_1", batch=4), with_features=True)
    assert int(model.block2.layer[0].bn1.num_batches_tracked) == 1
    assert int(model.bn1.num_batches_tracked) == 1


def test_shufflev2_preact_is_unshuffled_like_upstream():
    model = _eval_model("ShuffleV2")
    with torch.no_grad():
        _, out = model(_input("ShuffleV2"), with_features=True)
    for f, p in list(zip(out["feats"], out["preact_feats"]))[1:]:
        torch.testing.assert_close(f, channel_shuffle(F.relu(p), 2))


def test_mobilenetv2_preact_equals_feats():
    model = _eval_model("MobileNetV2")
    with torch.no_grad():
        _, out = model(_input("MobileNetV2"), with_features=True)
    for f, p in zip(out["feats"], out["preact_feats"]):
        assert p is f


@pytest.mark.parametrize(
    "name",
    ["resnet8", "ResNet18", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "imagenet_resnet18"],
)
def test_training_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, 10).train()
    logits, out = model(_input(name, batch=4), with_features=True)
    loss = logits.square().mean() + sum(t.square().mean() for t in out["feats"][1:] + out["preact_feats"][1:])
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad[:5]


def test_cifar_models_accept_64x64_inputs():
    for name, last in [("resnet8", 16), ("vgg8", 4)]:
        model = _eval_model(name)
        with torch.no_grad():
            logits, out = model(
                torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)), with_features=True
            )
        assert logits.shape == (2, 10)
        assert out["feats"][-1].shape[-1] == last


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown model 'nope'") as info:
        build_model("nope", 10)
    for valid in ("resnet8x4", "wrn_40_2", "MobileNetV2", "imagenet_resnet50", "mobile_half"):
        assert valid in str(info.value)


def test_aliases_and_name_matching():
    assert resolve_name("mobile_half") == resolve_name("mobilenet_v2") == "MobileNetV2"
    assert resolve_name("shufflenet_v1") == "ShuffleV1"
    assert resolve_name("shufflenet_v2") == "ShuffleV2"
    assert resolve_name("RESNET8X4") == "resnet8x4"
    assert resolve_name("wrn-40-2") == "wrn_40_2"
    # Unprefixed names are the CIFAR models; ImageNet models always carry "imagenet".
    for n in (18, 34, 50):
        assert resolve_name(f"resnet{n}") == resolve_name(f"cifar_resnet{n}") == f"ResNet{n}"
        assert resolve_name(f"resnet{n}_imagenet") == f"imagenet_resnet{n}"
    assert build_model("resnet50", 10).conv1.kernel_size == (3, 3)
    assert build_model("imagenet_resnet50", 10).conv1.kernel_size == (7, 7)
    half = build_model("mobile_half", 100)
    assert {k: v.shape for k, v in half.state_dict().items()} == {
        k: v.shape for k, v in build_model("MobileNetV2", 100).state_dict().items()
    }


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_invalid_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet8", bad)


def test_ddp_forwards_the_with_features_keyword(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no existing process group")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build_model("resnet8", 10)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        logits, out = ddp(_input("resnet8"), with_features=True)
        assert logits.shape == (2, 10) and len(out["feats"]) == 4
        assert ddp(_input("resnet8")).shape == (2, 10)
    finally:
        dist.destroy_process_group()
