"""TSKD review machinery: attention maps, increment sequences, the encoder–forecaster, the review loss."""

import pytest
import torch
import torch.nn.functional as F

from tskd_fast.nn import (
    EncoderForecaster,
    TSKDReview,
    attention_gap,
    attention_map,
    increment_sequence,
    review_loss,
)
from tskd_fast.nn.tskd import default_hidden_channels


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: threads only add synchronisation (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_attention_map_flat_and_height_normalisation():
    f = torch.randn(3, 5, 6, 4)
    flat = attention_map(f)
    assert flat.shape == (3, 1, 6, 4)
    torch.testing.assert_close(flat.flatten(1).norm(dim=1), torch.ones(3))
    energy = f.pow(2).mean(1)
    torch.testing.assert_close(flat[:, 0], energy / energy.flatten(1).norm(dim=1)[:, None, None])
    height = attention_map(f, "height")
    # The TSKD reference's at(x): F.normalize(x.pow(2).mean(1)).view(B, 1, H, W), i.e. per column.
    torch.testing.assert_close(height, F.normalize(f.pow(2).mean(1)).view(3, 1, 6, 4))
    torch.testing.assert_close(height[:, 0].norm(dim=1), torch.ones(3, 4))
    with pytest.raises(ValueError, match="attention_norm"):
        attention_map(f, "width")
    with pytest.raises(ValueError, match="feature must be a 4-D"):
        attention_map(torch.randn(3, 5, 6))


def test_increment_sequence_values_and_errors():
    a1, a2, a3, cur = (torch.randn(2, 1, 4, 4) for _ in range(4))
    seq = increment_sequence([a1, a2, a3], cur)
    assert seq.shape == (3, 2, 1, 4, 4)
    torch.testing.assert_close(seq, torch.stack([(a1 - a2).abs(), (a2 - a3).abs(), (cur - a3).abs()]))
    with pytest.raises(ValueError, match="at least one snapshot"):
        increment_sequence([], cur)
    with pytest.raises(ValueError, match=r"previous\[1\]"):
        increment_sequence([a1, torch.randn(2, 1, 4, 5)], cur)


def test_attention_gap_pools_the_teacher_to_the_student_size():
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 7, 16, 16)
    want = (attention_map(s) - attention_map(F.adaptive_avg_pool2d(t, (8, 8)))).abs()
    torch.testing.assert_close(attention_gap(s, t), want)
    with pytest.raises(ValueError, match="batch"):
        attention_gap(s, torch.randn(3, 4, 8, 8))


@pytest.mark.parametrize("size", [(8, 8), (7, 5)])
def test_encoder_forecaster_shapes_and_gradients(size):
    model = EncoderForecaster(6, size, peephole=True)
    seq = torch.rand(3, 2, 1, *size, requires_grad=True)
    out = model(seq)
    assert out.shape == (2, 1, *size)
    out.square().sum().backward()
    assert seq.grad is not None and seq.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    # The state is half the map (rounded up), as in the reference (16x16 states for 32x32 maps).
    assert model.encoder.cell_list[0].w_ci.shape == (1, 6, (size[0] + 1) // 2, (size[1] + 1) // 2)
    with pytest.raises(ValueError, match="sequence must be"):
        model(torch.rand(3, 2, 2, *size))
    with pytest.raises(ValueError, match="length 0"):
        model(torch.rand(0, 2, 1, *size))


def test_default_widths_follow_the_reference_parameter_files():
    assert [default_hidden_channels((s, s)) for s in (16, 8, 4)] == [64, 32, 32]
    head = TSKDReview([(32, 32), (32, 32), (16, 16)])
    assert head.hidden_channels == [64, 64, 32]


def test_review_loss_value_and_gradient_paths():
    torch.manual_seed(1)
    head = TSKDReview([(8, 8), (4, 4)], hidden_channels=[5, 4])
    s_feats = [torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(2, 6, 4, 4, requires_grad=True)]
    t_feats = [torch.randn(2, 5, 8, 8), torch.randn(2, 9, 8, 8)]  # branch 1 pooled to 4x4
    previous = [head.maps([f.detach() * k + 0.1 for f in s_feats]) for k in (0.5, 0.8, 1.1)]
    loss = head(previous, s_feats, t_feats)
    current = [attention_map(f) for f in s_feats]
    preds = head.predict(previous, current)
    targets = [attention_gap(s, t) for s, t in zip(s_feats, t_feats, strict=True)]
    want = sum(((p - t) ** 2).mean() for p, t in zip(preds, targets, strict=True))
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(review_loss(preds, targets), want)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in s_feats)
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with pytest.raises(ValueError, match="student_features must hold 2"):
        head(previous, s_feats[:1], t_feats)
    with pytest.raises(ValueError, match=r"previous_maps\[0\]"):
        head([previous[0][:1]], s_feats, t_feats)
    with pytest.raises(ValueError, match="hidden_channels"):
        TSKDReview([(8, 8)], hidden_channels=[4, 4])
    with pytest.raises(ValueError, match=r"predictions\[0\]"):
        review_loss([torch.zeros(2, 1, 4, 4)], [torch.zeros(2, 1, 4, 5)])
