"""LearnedAugmentation: the combination rule, gradients to every parameter, dtypes and devices,
its checkpointed random state, and errors that name the bad argument."""

import pytest
import torch

from tskd_fast.nn import ALL_OPS, LearnedAugmentation
from tskd_fast.nn.augment.fixed import invert

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.2, 0.3)


def _batch(b=4, h=16, w=16, device="cpu"):
    pixels = torch.randint(0, 256, (b, 3, h, w)).float() / 255.0
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return ((pixels - mean) / std).to(device)


def test_defaults_are_all_ops_and_cifar_statistics():
    aug = LearnedAugmentation()
    assert aug.ops == ALL_OPS and len(ALL_OPS) == 14 and aug.num_ops == 4
    assert len(aug.learned) == 11 and aug.magnitude_logits.shape == (11,)
    torch.testing.assert_close(
        aug.mean, torch.tensor([0.5071, 0.4867, 0.4408])
    )  # RepDistiller's CIFAR-100 mean


def test_output_is_x_plus_weighted_op_differences():
    aug = LearnedAugmentation(ops=["invert", "brightness"], num_ops=1, mean=MEAN, std=STD, seed=3)
    x = _batch()
    g = torch.Generator().manual_seed(11)
    draw = aug.draw(torch.Generator().manual_seed(11))
    out = aug(x, generator=g)
    (k,) = draw.chosen
    noise = torch.log(draw.uniform) - torch.log1p(-draw.uniform)
    p = torch.sigmoid((aug.probability_logits + noise) / aug.temperature)[k]
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    pixels = x * std + mean
    if aug.ops[k] == "invert":
        y = invert(pixels)
    else:
        y = (pixels * (1 + 0.9 * 0.5 * draw.signs[k])).clamp(0, 1)
    torch.testing.assert_close(out, x + p * (y - pixels) / std, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_reach_every_probability_and_magnitude(device):
    # All ops in one call; temperature 1 so that no relaxed-Bernoulli sample saturates to exactly 0/1.
    aug = LearnedAugmentation(num_ops=len(ALL_OPS), mean=MEAN, std=STD, temperature=1.0, seed=0).to(device)
    x = _batch(device=device)
    out = aug(x)
    weights = torch.linspace(-1.0, 2.0, out.numel(), device=device).view_as(out)
    (out * weights).sum().backward()
    for name in ("probability_logits", "magnitude_logits"):
        grad = getattr(aug, name).grad
        assert torch.isfinite(grad).all(), name
        assert (grad != 0).all(), (name, grad)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_autocast_and_channels_last(device):
    aug = LearnedAugmentation(mean=MEAN, std=STD, seed=1).to(device)
    x = _batch(device=device)
    ref = aug(x, generator=torch.Generator().manual_seed(5))
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        amp = aug(x, generator=torch.Generator().manual_seed(5))
    assert amp.dtype == torch.float32 and torch.equal(amp, ref)  # computed in float32 under autocast
    half = aug(x.bfloat16(), generator=torch.Generator().manual_seed(5))
    assert half.dtype == torch.bfloat16 and torch.isfinite(half.float()).all()
    cl = aug(x.contiguous(memory_format=torch.channels_last), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)


def test_random_state_is_part_of_the_state_dict():
    a = LearnedAugmentation(mean=MEAN, std=STD, seed=7)
    x = _batch()
    a(x)  # advance the generator
    b = LearnedAugmentation(mean=MEAN, std=STD, seed=123)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), b(x))


def test_output_changes_with_the_draw_and_gradient_reaches_input_free_parameters_only():
    aug = LearnedAugmentation(mean=MEAN, std=STD, seed=2)
    x = _batch()
    assert not torch.equal(aug(x), aug(x))  # a new draw per call
    assert {n for n, _ in aug.named_parameters()} == {"probability_logits", "magnitude_logits"}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"ops": ["brightness", "blur"]}, "ops: unknown op names \\['blur'\\]"),
        ({"ops": "brightness"}, "ops must be a non-empty list"),
        ({"ops": ["invert", "invert"]}, "listed more than once"),
        (
            {"ops": ["invert", "rotate"], "num_ops": 3},
            "num_ops must be an integer from 1 to the number of ops \\(2\\)",
        ),
        ({"num_ops": 0}, "num_ops"),
        ({"mean": (0.5, 0.5), "std": (0.2, 0.2, 0.2)}, "mean and std must have one value per channel"),
        ({"mean": (0.5,), "std": (0.2,)}, "need RGB images"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be > 0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"cutout_size": 0}, "cutout_size"),
        ({"init_probability": 1.0}, "init_probability"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LearnedAugmentation(**kwargs)


def test_bad_inputs_are_named():
    aug = LearnedAugmentation()
    with pytest.raises(ValueError, match="x must be RGB .* for the ops \\['saturation', 'contrast'\\]"):
        LearnedAugmentation(ops=["saturation", "contrast"], num_ops=2)(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="x has 1 channels but mean/std have 3 values"):
        LearnedAugmentation(ops=["invert"], num_ops=1)(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="x must be a floating-point batch"):
        aug(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    grey = LearnedAugmentation(ops=["invert", "rotate", "posterize"], mean=(0.5,), std=(0.25,), num_ops=3)
    assert grey(torch.randn(2, 1, 8, 8)).shape == (2, 1, 8, 8)  # no colour op: one channel is fine
