"""tskd_fast.nn.ABF / ReviewKDFusion / HCLLoss against the official ReviewKD layout written out in
plain PyTorch (docs/methods.md §2.1-§2.4): same state_dict keys, initialisation, outputs and
gradients, with the fused ops on every backend here; and the argument checks."""

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tskd_fast import reference
from tskd_fast.nn import ABF, HCLLoss, ReviewKDFusion

BACKENDS = ["reference", *kernel_backends()]


class OfficialABF(nn.Module):
    """The ABF of docs/methods.md §2.1 in plain PyTorch: the layout, init and forward of the official code."""

    def __init__(self, in_channel, mid_channel, out_channel, fuse):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channel, mid_channel, 1, bias=False), nn.BatchNorm2d(mid_channel)
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channel, out_channel, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(out_channel),
        )
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channel, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, y=None, shape=None, out_shape=None):
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            y = TF.interpolate(y, (shape, shape), mode="nearest")
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = TF.interpolate(x, (out_shape, out_shape), mode="nearest")
        return self.conv2(x), x


class OfficialStack(nn.Module):
    """The official wrapper's ABF list and review loop (without the student)."""

    def __init__(self, in_channels, out_channels, shapes, out_shapes=None):
        super().__init__()
        self.shapes, self.out_shapes = shapes, shapes if out_shapes is None else out_shapes
        mid = min(512, in_channels[-1])
        abfs = nn.ModuleList(
            OfficialABF(c, mid, out_channels[i], i < len(in_channels) - 1) for i, c in enumerate(in_channels)
        )
        self.abfs = abfs[::-1]

    def forward(self, features):
        x = features[::-1]
        out, res = self.abfs[0](x[0], out_shape=self.out_shapes[0])
        results = [out]
        for f, abf, shape, out_shape in zip(x[1:], self.abfs[1:], self.shapes[1:], self.out_shapes[1:]):
            out, res = abf(f, res, shape, out_shape)
            results.insert(0, out)
        return results


def _grads(module, inputs):
    return [p.grad for p in module.parameters()] + [t.grad for t in inputs]


def _run(module, inputs, call, weights):
    module.zero_grad(set_to_none=True)
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    outs = call(module, inputs)
    outs = list(outs) if isinstance(outs, tuple | list) else [outs]
    loss = sum((o * w).sum() for o, w in zip(outs, weights))
    loss.backward()
    return [o.detach() for o in outs], _grads(module, inputs)


def _compare(ours, official, inputs, call_ours, call_official, device, what):
    """Outputs and gradients (parameters and inputs) of ours (float32) vs the official layout in
    float32 and float64 (the truth), by the project's tolerance rule."""
    official.to(device)
    ours.to(device)
    truth_model = _double_copy(official)
    with torch.no_grad():
        probe = call_official(official, [t.to(device) for t in inputs])
    probe = list(probe) if isinstance(probe, tuple | list) else [probe]
    weights = [torch.randn(o.shape, device=device) for o in probe]
    inputs = [t.to(device) for t in inputs]
    got = _run(ours, inputs, call_ours, weights)
    same = _run(official, inputs, call_official, weights)
    truth = _run(truth_model, [t.double() for t in inputs], call_official, [w.double() for w in weights])
    for kind, a, b, c in zip(("output", "grad"), got, same, truth):
        assert len(a) == len(b) == len(c)
        for i, (x, y, z) in enumerate(zip(a, b, c)):
            assert_close_to_truth(x, y, z, torch.float32, f"{what} {kind} {i}")


def _double_copy(module):
    import copy

    return copy.deepcopy(module).double()


def test_abf_has_the_official_keys_and_initialisation():
    for fuse in (True, False):
        torch.manual_seed(3)
        official = OfficialABF(5, 6, 7, fuse)
        torch.manual_seed(3)
        ours = ABF(5, 6, 7, fuse)
        a, b = official.state_dict(), ours.state_dict()
        assert list(a) == list(b)
        for key in a:
            assert torch.equal(a[key], b[key]), key
    with_att = ABF(5, 6, 7, True).state_dict()
    assert "att_conv.0.weight" in with_att and with_att["att_conv.0.weight"].shape == (2, 12, 1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "fuse,x_size,y_size,out_size", [(True, 6, 3, 12), (True, 5, 1, 5), (False, 1, None, 1)]
)
def test_abf_matches_official(backend, fuse, x_size, y_size, out_size):
    official = OfficialABF(5, 6, 7, fuse)
    ours = ABF(5, 6, 7, fuse, backend=backend)
    ours.load_state_dict(official.state_dict())
    inputs = [torch.randn(3, 5, x_size, x_size)]
    if fuse:
        inputs.append(torch.randn(3, 6, y_size, y_size))

    def call(module, t):
        return module(t[0], t[1], x_size, out_size) if fuse else module(t[0], out_shape=out_size)

    _compare(ours, official, inputs, call, call, device_of(backend), f"ABF {backend}")


# A small layout with every feature of the real ones: a pooled deepest level, 2x upsampling of the
# residual, an out_shape resize (ShuffleNet-like), odd channel counts.
SMALL = {"in_channels": [5, 9, 12, 12], "out_channels": [7, 6, 11, 11], "shapes": [1, 2, 4, 8]}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("out_shapes", [None, [1, 4, 8, 16]])
def test_fusion_matches_official_stack(backend, out_shapes):
    official = OfficialStack(SMALL["in_channels"], SMALL["out_channels"], SMALL["shapes"], out_shapes)
    ours = ReviewKDFusion(**SMALL, out_shapes=out_shapes, backend=backend)
    ours.load_state_dict(official.state_dict())
    sizes = SMALL["shapes"][::-1]
    inputs = [torch.randn(2, c, s, s) for c, s in zip(SMALL["in_channels"], sizes)]
    _compare(
        ours, official, inputs, lambda m, t: m(t), lambda m, t: m(t), device_of(backend), f"stack {backend}"
    )


def test_fusion_with_the_real_resnet8x4_layout():
    """The resnet32x4 -> resnet8x4 preset's channels (mid 256) on the default backend, at half its
    spatial sizes (16x16 input) to keep the float64 truth cheap."""
    layout = {
        "in_channels": [64, 128, 256, 256],
        "out_channels": [64, 128, 256, 256],
        "shapes": [1, 4, 8, 16],
    }
    official = OfficialStack(**layout)
    preset = ReviewKDFusion.from_preset("resnet32x4", "resnet8x4")
    ours = ReviewKDFusion(
        preset.in_channels, preset.out_channels, layout["shapes"], mid_channel=preset.mid_channel
    )
    ours.load_state_dict(official.state_dict())
    inputs = [torch.randn(2, c, s, s) for c, s in zip(layout["in_channels"], [16, 8, 4, 1])]
    _compare(ours, official, inputs, lambda m, t: m(t), lambda m, t: m(t), "cpu", "resnet8x4 stack")


def test_fusion_takes_the_pooled_vector_and_runtime_out_shapes():
    fusion = ReviewKDFusion([4, 6, 6], [3, 5, 5])
    feats = [torch.randn(2, 4, 6, 6), torch.randn(2, 6, 3, 3), torch.randn(2, 6)]
    outs = fusion(feats, out_shapes=[1, (3, 3), (12, 12)])
    assert [tuple(o.shape) for o in outs] == [(2, 3, 12, 12), (2, 5, 3, 3), (2, 5, 1, 1)]
    flat = fusion([feats[0], feats[1], feats[2][:, :, None, None]], out_shapes=[1, 3, 12])
    for a, b in zip(outs, flat):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hcl_loss_module_matches_reference(backend):
    device = device_of(backend)
    fs = [torch.randn(2, 3, s, s, device=device, requires_grad=True) for s in (8, 7, 1)]
    ft = [torch.randn(2, 3, s, s, device=device) for s in (8, 7, 1)]
    loss = HCLLoss(backend=backend)(fs, ft)
    expected = reference.hcl_loss([f.double() for f in fs], [t.double() for t in ft])
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fs)


def test_abf_errors_name_the_argument():
    abf = ABF(4, 6, 5, True)
    x, y = torch.randn(2, 4, 4, 4), torch.randn(2, 6, 2, 2)
    with pytest.raises(ValueError, match="in_channel=4"):
        abf(torch.randn(2, 3, 4, 4), y, 4, 4)
    with pytest.raises(ValueError, match="^y: .*fuse=True"):
        abf(x)
    with pytest.raises(ValueError, match="y has batch size 3 but x has 2"):
        abf(x, torch.randn(3, 6, 2, 2), 4, 4)
    with pytest.raises(ValueError, match="mid_channel=6"):
        abf(x, torch.randn(2, 5, 2, 2), 4, 4)
    with pytest.raises(ValueError, match="shape=8 must be x's spatial size"):
        abf(x, y, 8, 8)
    with pytest.raises(ValueError, match="y .*cannot be fused"):
        abf(x, torch.randn(2, 6, 8, 8), 4, 4)
    with pytest.raises(ValueError, match="out_shape must be"):
        abf(x, y, 4, "big")
    with pytest.raises(ValueError, match="mid_channel must be a positive int"):
        ABF(4, 0, 5, True)


def test_fusion_errors_name_the_argument():
    from tskd_fast.models import build_model

    with pytest.raises(ValueError, match="out_channels has 2 teacher levels but in_channels has 3"):
        ReviewKDFusion([4, 6, 6], [3, 5])
    with pytest.raises(ValueError, match="shapes has 2 entries but there are 3 levels"):
        ReviewKDFusion([4, 6, 6], [3, 5, 5], shapes=[1, 2])
    fusion = ReviewKDFusion([4, 6, 6], [3, 5, 5], shapes=[1, 3, 6])
    good = [torch.randn(2, 4, 6, 6), torch.randn(2, 6, 3, 3), torch.randn(2, 6)]
    with pytest.raises(ValueError, match="features has 2 levels but the fusion was built for 3"):
        fusion(good[1:])
    with pytest.raises(ValueError, match=r"features\[1\] has 5 channels but in_channels\[1\] = 6"):
        fusion([good[0], torch.randn(2, 5, 3, 3), good[2]])
    with pytest.raises(ValueError, match=r"features\[2\] has batch size 3 but features\[0\] has 2"):
        fusion([good[0], good[1], torch.randn(3, 6)])
    with pytest.raises(ValueError, match=r"features\[0\] is \(5, 5\) but shapes\[2\] = \(6, 6\)"):
        fusion([torch.randn(2, 4, 5, 5), good[1], good[2]])
    with pytest.raises(ValueError, match=r"features\[1\] of size \(3, 3\) cannot be fused .*out_shapes\[0\]"):
        ReviewKDFusion([4, 6, 6], [3, 5, 5])(good, out_shapes=[6, 3, 6])
    with pytest.raises(ValueError, match="student has 4 levels .* teacher has 5"):
        ReviewKDFusion.for_models(build_model("resnet8", 10), build_model("ResNet18", 10))
    with pytest.raises(ValueError, match="no ReviewKD preset for teacher 'resnet8'"):
        ReviewKDFusion.from_preset("resnet8", "resnet20")


def test_hcl_errors_name_the_argument():
    loss = HCLLoss()
    a = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)]
    with pytest.raises(ValueError, match="student_feats has 2 levels but teacher_feats has 1"):
        loss(a, a[:1])
    with pytest.raises(ValueError, match=r"teacher_feats\[1\] has batch size 3"):
        loss(a, [a[0], torch.randn(3, 3, 2, 2)])
    with pytest.raises(ValueError, match=r"teacher_feats\[0\] has spatial size"):
        loss(a, [torch.randn(2, 3, 5, 5), a[1]])
    with pytest.raises(ValueError, match="levels must be"):
        HCLLoss(levels=(4, 0))
