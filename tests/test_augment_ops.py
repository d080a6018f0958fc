"""The augmentation ops against torchvision.transforms.v2.functional, their identities at magnitude 0,
and their magnitude gradients.

Images are uint8 values / 255 (what the loaders un-normalise back to). Tolerances: colour ops are the
same float formulas as torchvision (1e-6); posterize, equalize and invert are exact on 8-bit values;
solarize is exact away from the threshold; the geometric ops use the same bilinear grid_sample
(zero fill) with the grid built from the same inverse matrix, so they agree to float rounding of
the grid (1e-5, on every pixel; interior pixels are checked separately at 1e-5 as well).
"""

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from tskd_fast.nn.augment import colour, fixed, geometric

BILINEAR = TF.InterpolationMode.BILINEAR


@pytest.fixture
def images():
    u8 = torch.randint(0, 256, (3, 3, 17, 23), dtype=torch.uint8)
    return u8, u8.float() / 255.0


@pytest.mark.parametrize("factor", [0.1, 0.55, 1.0, 1.45, 1.9])
@pytest.mark.parametrize(
    "ours,theirs",
    [
        (colour.adjust_brightness, TF.adjust_brightness),
        (colour.adjust_saturation, TF.adjust_saturation),
        (colour.adjust_contrast, TF.adjust_contrast),
        (colour.adjust_sharpness, TF.adjust_sharpness),
    ],
    ids=["brightness", "saturation", "contrast", "sharpness"],
)
def test_factor_ops_match_torchvision(images, ours, theirs, factor):
    _, x = images
    torch.testing.assert_close(ours(x, torch.tensor(factor)), theirs(x, factor), atol=1e-6, rtol=0)


@pytest.mark.parametrize("strength", [0.0, 0.2, 0.5, 0.7, 1.0])
def test_posterize_matches_torchvision_on_8_bit_values(images, strength):
    u8, x = images
    bits = 8 - round(4 * strength)
    expected = TF.posterize(u8, bits).float() / 255.0
    assert torch.equal(colour.posterize(x, torch.tensor(strength)), expected)


@pytest.mark.parametrize("strength", [0.3, 0.61, 0.9])
def test_solarize_matches_torchvision_off_the_threshold(images, strength):
    _, x = images  # thresholds 0.7, 0.39, 0.1 are not multiples of 1/255
    torch.testing.assert_close(colour.solarize(x, torch.tensor(strength)), TF.solarize(x, 1.0 - strength))


def test_equalize_and_invert_match_torchvision(images):
    u8, x = images
    flat = torch.full((1, 3, 8, 8), 128 / 255.0)  # a constant image: left unchanged
    assert torch.equal(fixed.equalize(x), TF.equalize(u8).float() / 255.0)
    assert torch.equal(fixed.equalize(flat), flat)
    assert torch.equal(fixed.invert(x), TF.invert(x))


def _affine(x, **kw):
    args = {"angle": 0.0, "translate": [0, 0], "scale": 1.0, "shear": [0.0, 0.0], "interpolation": BILINEAR}
    return TF.affine(x, **{**args, **kw})


GEOMETRIC = {
    "shear_x": (
        geometric.shear_x,
        [-0.3, 0.12, 0.3],
        lambda x, s: _affine(x, shear=[math.degrees(math.atan(s)), 0.0], center=[0, 0]),
    ),
    "shear_y": (
        geometric.shear_y,
        [-0.3, 0.12, 0.3],
        lambda x, s: _affine(x, shear=[0.0, math.degrees(math.atan(s))], center=[0, 0]),
    ),
    "translate_x": (geometric.translate_x, [-7.0, 3.0, 10.0], lambda x, t: _affine(x, translate=[int(t), 0])),
    "translate_y": (geometric.translate_y, [-7.0, 3.0, 10.0], lambda x, t: _affine(x, translate=[0, int(t)])),
    "rotate": (geometric.rotate, [-30.0, 12.5, 30.0], lambda x, a: TF.rotate(x, a, interpolation=BILINEAR)),
}


@pytest.mark.parametrize("name", list(GEOMETRIC))
def test_geometric_ops_match_torchvision_bilinear(images, name):
    _, x = images
    ours, values, theirs = GEOMETRIC[name]
    for value in values:
        a, b = ours(x, torch.tensor(value)), theirs(x, value)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        torch.testing.assert_close(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2], atol=1e-5, rtol=0)


LEARNED = {
    "brightness": (colour.adjust_brightness, 1.0),
    "saturation": (colour.adjust_saturation, 1.0),
    "contrast": (colour.adjust_contrast, 1.0),
    "sharpness": (colour.adjust_sharpness, 1.0),
    "posterize": (colour.posterize, 0.0),
    "solarize": (colour.solarize, 0.0),
    "shear_x": (geometric.shear_x, 0.0),
    "shear_y": (geometric.shear_y, 0.0),
    "translate_x": (geometric.translate_x, 0.0),
    "translate_y": (geometric.translate_y, 0.0),
    "rotate": (geometric.rotate, 0.0),
}


@pytest.mark.parametrize("name", list(LEARNED))
def test_identity_at_magnitude_zero(images, name):
    _, x = images
    fn, neutral = LEARNED[name]
    # Colour ops are exactly the identity; the identity grid of the geometric ops is rounded in float32.
    tol = 1e-5 if name in GEOMETRIC else 0.0
    torch.testing.assert_close(fn(x, torch.tensor(neutral)), x, atol=tol, rtol=0)


# Values away from the identity where each op moves the image (so the magnitude gradient is non-zero).
MOVING = {
    "brightness": 0.8,
    "saturation": 1.4,
    "contrast": 0.6,
    "sharpness": 1.8,
    "posterize": 0.6,
    "solarize": 0.4,
    "shear_x": 0.2,
    "shear_y": -0.2,
    "translate_x": 2.5,
    "translate_y": -1.5,
    "rotate": 14.0,
}


@pytest.mark.parametrize("name", list(LEARNED))
def test_magnitude_gradient_is_finite_and_non_zero(images, name):
    _, x = images
    fn, _ = LEARNED[name]
    value = torch.tensor(MOVING[name], requires_grad=True)
    out = fn(x, value)
    # A weighted sum, so that the gradient does not cancel by symmetry.
    (out * torch.linspace(-1.0, 2.0, out.numel()).view_as(out)).sum().backward()
    assert torch.isfinite(value.grad) and value.grad.abs() > 0


@pytest.mark.parametrize("name", ["brightness", "saturation", "contrast", "sharpness", "rotate", "shear_x"])
def test_exact_ops_pass_float64_gradcheck(name):
    fn, _ = LEARNED[name]
    x = torch.rand(1, 3, 7, 9, dtype=torch.float64) * 0.8 + 0.1  # away from the clamp at 0 and 1
    value = torch.tensor(
        MOVING[name] if name != "brightness" else 1.05, dtype=torch.float64, requires_grad=True
    )
    assert torch.autograd.gradcheck(lambda v: fn(x, v), (value,))


def test_straight_through_gradients_point_the_right_way(images):
    _, x = images
    strength = torch.tensor(0.5, requires_grad=True)
    colour.posterize(x, strength).mean().backward()
    assert strength.grad < 0  # dropping more bits lowers the values on average
    strength = torch.tensor(0.5, requires_grad=True)
    bright = torch.full((1, 3, 4, 4), 0.9)
    colour.solarize(bright, strength).mean().backward()
    assert strength.grad < 0  # a lower threshold inverts bright pixels: the mean falls


def test_cutout_fills_the_clipped_window():
    x = torch.rand(2, 3, 10, 12)
    fill = torch.tensor([0.1, 0.2, 0.3])
    out = fixed.cutout(x, top=1, left=10, size=6, fill=fill)
    inside = torch.zeros(10, 12, dtype=torch.bool)
    inside[0:4, 7:12] = True
    assert torch.equal(out[:, :, inside], fill.view(1, 3, 1).expand(2, 3, int(inside.sum())))
    assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])
