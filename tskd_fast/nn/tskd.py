"""TSKD's review machinery (docs/methods.md §3): attention maps, increment sequences, the
ConvLSTM encoder–forecaster that predicts the next increment, and the review loss.

For each feature branch b the review compares a prediction with a target:
    s_b = [|A1_b - A2_b|, ..., |A(n-1)_b - An_b|, |Acur_b - An_b|]    (snapshot maps in time order)
    pred_b = EncoderForecaster_b(s_b)                                    (B, 1, H, W)
    d_b = |A(f_s,b) - A(pool(f_t,b))|                                    (the student-teacher gap)
    loss = sum_b mean((pred_b - d_b)^2)                                  (unweighted, as the reference)
Neither side is detached: gradients reach the student through Acur and d_b, the ConvLSTMs through pred_b.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tskd_fast.nn.convlstm import ConvLSTM

__all__ = [
    "ATTENTION_NORMS",
    "EncoderForecaster",
    "TSKDReview",
    "attention_gap",
    "attention_map",
    "default_hidden_channels",
    "increment_sequence",
    "review_loss",
]

ATTENTION_NORMS = ("flat", "height")


def _check_norm(norm: str) -> None:
    if norm not in ATTENTION_NORMS:
        raise ValueError(f"attention_norm must be one of {ATTENTION_NORMS}, got {norm!r}")


def attention_map(feature: Tensor, norm: str = "flat") -> Tensor:
    """A(f): the channel mean of f^2, L2-normalised: (B, C, H, W) -> (B, 1, H, W), float32 or wider.

    norm="flat" normalises each sample's whole H x W map (the usual attention transfer);
    norm="height" normalises each column over H separately, which is what the TSKD reference's
    ``F.normalize(x.pow(2).mean(1))`` does (dim 1 of the (B, H, W) tensor).
    """
    _check_norm(norm)
    if not isinstance(feature, Tensor) or feature.dim() != 4:
        raise ValueError(f"feature must be a 4-D tensor (B, C, H, W), got {_shape(feature)}")
    dtype = torch.promote_types(feature.dtype, torch.float32)
    energy = feature.to(dtype).pow(2).mean(dim=1)  # (B, H, W)
    if norm == "flat":
        energy = F.normalize(energy.flatten(1), dim=1).view_as(energy)
    else:
        energy = F.normalize(energy, dim=1)
    return energy.unsqueeze(1)


def increment_sequence(previous: Sequence[Tensor], current: Tensor) -> Tensor:
    """The knowledge-increment sequence of one branch.

    previous: the snapshot maps A1..An in time order (n >= 1), each (B, 1, H, W);
    current: the current student's map (B, 1, H, W).
    Returns (n, B, 1, H, W): [|A1 - A2|, ..., |A(n-1) - An|, |current - An|] (time-major).
    """
    if len(previous) == 0:
        raise ValueError("previous must hold at least one snapshot map, got an empty sequence")
    for i, a in enumerate(previous):
        if not isinstance(a, Tensor) or a.shape != current.shape:
            raise ValueError(
                f"previous[{i}] must have the shape of current {tuple(current.shape)}, got {_shape(a)}"
            )
    later = [*previous[1:], current]
    return torch.stack([(b - a).abs() for a, b in zip(previous, later, strict=True)])


def attention_gap(student_feature: Tensor, teacher_feature: Tensor, norm: str = "flat") -> Tensor:
    """d = |A(f_s) - A(f_t)| (B, 1, H_s, W_s); f_t is adaptive-average-pooled to the student's size
    first when the sizes differ (the reference's rule). Channel counts may differ."""
    for name, t in (("student_feature", student_feature), ("teacher_feature", teacher_feature)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor (B, C, H, W), got {_shape(t)}")
    if teacher_feature.shape[0] != student_feature.shape[0]:
        raise ValueError(
            f"teacher_feature has batch {teacher_feature.shape[0]} but student_feature has "
            f"{student_feature.shape[0]}"
        )
    return (
        attention_map(student_feature, norm) - _teacher_map(teacher_feature, student_feature.shape[2:], norm)
    ).abs()


def _teacher_map(teacher_feature: Tensor, size: Sequence[int], norm: str) -> Tensor:
    if tuple(teacher_feature.shape[2:]) != tuple(size):
        teacher_feature = F.adaptive_avg_pool2d(teacher_feature, tuple(size))
    return attention_map(teacher_feature, norm)


def review_loss(predictions: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """sum_b mean((pred_b - target_b)^2) over the branches; every pair has the same shape."""
    if len(predictions) != len(targets) or not predictions:
        raise ValueError(
            f"predictions and targets must be non-empty and of equal length, got {len(predictions)} "
            f"and {len(targets)}"
        )
    total = None
    for b, (p, t) in enumerate(zip(predictions, targets, strict=True)):
        if p.shape != t.shape:
            raise ValueError(
                f"predictions[{b}] has shape {tuple(p.shape)} but targets[{b}] has {tuple(t.shape)}"
            )
        term = F.mse_loss(p.float(), t.float())
        total = term if total is None else total + term
    assert total is not None
    return total


def default_hidden_channels(state_size: Sequence[int]) -> int:
    """The reference's ConvLSTM width: 64 where the state is >= 16 a side, else 32 (its parameter
    files use 64 for 16x16 states and 32 for 8x8 and 4x4 ones)."""
    return 64 if min(state_size) >= 16 else 32


class EncoderForecaster(nn.Module):
    """One branch's increment predictor: (T, B, 1, H, W) -> (B, 1, H, W) (docs/methods.md §3.5).

    Encoder: conv 3x3 stride 2 (1 -> 8) + LeakyReLU(0.2) on every step, then a ConvLSTM (8 -> C_h)
    from a zero state over the T steps. Forecaster: a ConvLSTM (C_h -> C_h) from the encoder's
    final (h, c), one all-zero input step, then ConvTranspose 4x4 stride 2 (C_h -> 8) + LeakyReLU,
    conv 3x3 (8 -> 8) + LeakyReLU, conv 1x1 (8 -> 1). The state is ceil(H/2) x ceil(W/2); odd map
    sizes are cropped back to H x W after the transposed convolution.

    Args:
        hidden_channels: C_h of both ConvLSTMs.
        map_size: (H, W) of the attention maps; needed only for peepholes (their shape).
        peephole: trainable peepholes in both ConvLSTMs (the reference's stay zero).
        backend: backend of the ConvLSTM gate op.
    """

    def __init__(
        self,
        hidden_channels: int,
        map_size: Sequence[int] | None = None,
        peephole: bool = False,
        encoder_channels: int = 8,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        state_size = None if map_size is None else tuple((s + 1) // 2 for s in map_size)
        if peephole and state_size is None:
            raise ValueError("peephole=True needs map_size=(H, W) of the attention maps")
        self.map_size = None if map_size is None else tuple(map_size)
        self.encoder_conv = nn.Conv2d(1, encoder_channels, 3, stride=2, padding=1)
        self.encoder = ConvLSTM(
            encoder_channels, hidden_channels, 3, peephole=peephole, spatial_size=state_size, backend=backend
        )
        self.forecaster = ConvLSTM(
            hidden_channels, hidden_channels, 3, peephole=peephole, spatial_size=state_size, backend=backend
        )
        self.decoder_deconv = nn.ConvTranspose2d(hidden_channels, encoder_channels, 4, stride=2, padding=1)
        self.decoder_conv = nn.Conv2d(encoder_channels, encoder_channels, 3, padding=1)
        self.decoder_out = nn.Conv2d(encoder_channels, 1, 1)

    def forward(self, sequence: Tensor) -> Tensor:
        if not isinstance(sequence, Tensor) or sequence.dim() != 5 or sequence.shape[2] != 1:
            raise ValueError(f"sequence must be a (T, B, 1, H, W) tensor of maps, got {_shape(sequence)}")
        steps, batch, _, height, width = sequence.shape
        if steps == 0:
            raise ValueError("sequence has length 0; need at least one increment map")
        x = sequence.reshape(steps * batch, 1, height, width).to(self.encoder_conv.weight.dtype)
        x = F.leaky_relu(self.encoder_conv(x), 0.2, inplace=True)
        x = x.reshape(steps, batch, *x.shape[1:])
        _, state = self.encoder(x)
        out, _ = self.forecaster(None, state, steps=1)
        y = F.leaky_relu(self.decoder_deconv(out[-1]), 0.2, inplace=True)
        y = F.leaky_relu(self.decoder_conv(y), 0.2, inplace=True)
        y = self.decoder_out(y)
        return y[:, :, :height, :width]


class TSKDReview(nn.Module):
    """The review head: one EncoderForecaster per feature branch, and the review loss.

    Args:
        map_sizes: (H_b, W_b) of each branch's student feature map (= attention map).
        hidden_channels: C_h per branch; None -> default_hidden_channels of each state size.
        peephole, backend: as for EncoderForecaster.
        attention_norm: "flat" (default) or "height" (the reference's per-column normalisation).

    forward(previous_maps, student_features, teacher_features) -> scalar review loss (float32)
        previous_maps: per snapshot (time order), the list of its branch attention maps (B, 1, H_b, W_b);
        student_features / teacher_features: per branch, (B, C, H, W) maps of the current student
        (with gradient) and the teacher.
    """

    def __init__(
        self,
        map_sizes: Sequence[Sequence[int]],
        hidden_channels: Sequence[int] | None = None,
        peephole: bool = False,
        attention_norm: str = "flat",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _check_norm(attention_norm)
        if not map_sizes:
            raise ValueError("map_sizes must list at least one branch")
        self.map_sizes = [tuple(int(v) for v in s) for s in map_sizes]
        if hidden_channels is None:
            hidden_channels = [default_hidden_channels([(v + 1) // 2 for v in s]) for s in self.map_sizes]
        if len(hidden_channels) != len(self.map_sizes):
            raise ValueError(
                f"hidden_channels must give one width per branch ({len(self.map_sizes)}), got {list(hidden_channels)}"
            )
        self.hidden_channels = [int(c) for c in hidden_channels]
        self.attention_norm = attention_norm
        self.branches = nn.ModuleList(
            EncoderForecaster(c, s, peephole=peephole, backend=backend)
            for c, s in zip(self.hidden_channels, self.map_sizes, strict=True)
        )

    def extra_repr(self) -> str:
        return f"map_sizes={self.map_sizes}, attention_norm={self.attention_norm!r}"

    def maps(self, features: Sequence[Tensor]) -> list[Tensor]:
        """The attention maps of one model's branch features."""
        return [attention_map(f, self.attention_norm) for f in features]

    def predict(
        self, previous_maps: Sequence[Sequence[Tensor]], current_maps: Sequence[Tensor]
    ) -> list[Tensor]:
        """Each branch's predicted increment (B, 1, H_b, W_b)."""
        nb = len(self.branches)
        if len(current_maps) != nb:
            raise ValueError(f"current_maps must hold {nb} branch maps, got {len(current_maps)}")
        for i, snap in enumerate(previous_maps):
            if len(snap) != nb:
                raise ValueError(f"previous_maps[{i}] must hold {nb} branch maps, got {len(snap)}")
        return [
            branch(increment_sequence([snap[b] for snap in previous_maps], current_maps[b]))
            for b, branch in enumerate(self.branches)
        ]

    def forward(
        self,
        previous_maps: Sequence[Sequence[Tensor]],
        student_features: Sequence[Tensor],
        teacher_features: Sequence[Tensor],
    ) -> Tensor:
        nb = len(self.branches)
        for name, feats in (("student_features", student_features), ("teacher_features", teacher_features)):
            if len(feats) != nb:
                raise ValueError(f"{name} must hold {nb} branch features, got {len(feats)}")
        current = self.maps(student_features)
        predictions = self.predict(previous_maps, current)
        targets = []
        for b, (a_s, f_t) in enumerate(zip(current, teacher_features, strict=True)):
            if not isinstance(f_t, Tensor) or f_t.dim() != 4 or f_t.shape[0] != a_s.shape[0]:
                raise ValueError(
                    f"teacher_features[{b}] must be a (B, C, H, W) tensor with batch {a_s.shape[0]}, got {_shape(f_t)}"
                )
            targets.append((a_s - _teacher_map(f_t, a_s.shape[2:], self.attention_norm)).abs())
        return review_loss(predictions, targets)


def _shape(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
