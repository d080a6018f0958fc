"""LearnedAugmentation: the TST data-augmentation module (learned per-op probabilities and magnitudes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tskd_fast.nn.augment.fixed import cutout, cutout_at, equalize, invert
from tskd_fast.nn.augment.ops import ALL_OPS, OPS

# CIFAR-100's per-channel statistics (those of tskd_fast.data.transforms).
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
# What the relaxed Bernoulli of an op takes as its logit: the learned value itself, or its sigmoid
# (the TST reference, which passes a probability where a logit belongs).
APPLY_LOGITS = ("learned", "sigmoid")


@dataclass(frozen=True)
class AugmentationDraw:
    """The random choices of one call: the chosen op indices, a sign per op (+-1), a uniform
    per op for the relaxed Bernoulli noise, and the cutout centre as fractions of (H, W)."""

    chosen: tuple[int, ...]
    signs: Tensor  # (n_ops,) float32, CPU
    uniform: Tensor  # (n_ops,) float32 in (0, 1), CPU
    centre: tuple[float, float]

    def packed(self, device: torch.device | str | None = None) -> Tensor:
        """The draw as one float32 tensor (3 * n_ops + 2,) on ``device`` (default CPU): a mask of
        the chosen ops (1 chosen, 0 not), the signs, the uniforms and the cutout centre; what
        ``LearnedAugmentation.forward_packed`` reads. One host-to-device copy, asynchronous."""
        chosen = torch.zeros(self.signs.numel())
        chosen[list(self.chosen)] = 1.0
        out = torch.cat([chosen, self.signs, self.uniform, torch.tensor(self.centre, dtype=torch.float32)])
        return out if device is None else out.to(device, non_blocking=True)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class LearnedAugmentation(nn.Module):
    """A batch augmentation with learnable per-op probabilities and magnitudes (TST, Shao et al. 2023).

    Each call draws ``num_ops`` of ``ops`` uniformly without replacement and returns
    ``x + sum_k p_k (op_k(x) - x)``, where p_k is a relaxed-Bernoulli sample (temperature
    ``temperature``) around the learned apply probability sigmoid(probability_logits[k]), and the
    op's magnitude is sigmoid(magnitude_logits[k]) of its range (see tskd_fast.nn.augment.ops),
    with a random sign per call for the signed ops. The ops are applied side by side, not composed.
    One draw serves the whole batch, as in the reference. Every learnable op is differentiable in
    its magnitude directly (no pretrained surrogate network as in the reference): colour and
    geometric ops exactly, posterize and solarize through straight-through estimates.

    The ops run on un-normalised images: x is un-normalised with ``mean``/``std``, augmented, and
    normalised again. Cutout fills its window with the mean colour (0 in normalised units), as the
    reference's cutout of the normalised image does. The result is not clamped (nor is the
    reference's). Computation is in float32 (float64 inputs stay float64), also under autocast.

    Random choices come from the module's own CPU generator (seeded from ``seed``, or from torch's
    global generator when None), whose state is part of ``state_dict()``, so a restored module
    draws the same sequence. ``forward(x, generator=g)`` draws from ``g`` instead.

    Args:
        ops: op names (default: all 14 of ``ALL_OPS``).
        num_ops: ops applied per call, 1..len(ops).
        mean, std: per-channel normalisation of the inputs (default: CIFAR-100's).
        temperature: relaxed-Bernoulli temperature (> 0; the reference's 0.05).
        cutout_size: side of the cutout window in pixels (default: the image side, the
            reference's 32 on CIFAR and 224 on ImageNet).
        init_probability, init_magnitude: initial apply probability and magnitude, in (0, 1).
        seed: seed of the module's generator.
        apply_logit: "learned" (the relaxed Bernoulli's logit is the learned probability logit) or
            "sigmoid" (its sigmoid, as the reference: an op's apply rate then stays in (0.5, 0.73)).
        signed: signed ops get a random sign per call (False: always positive, as the reference's
            surrogate ops in use).

    forward(x (B, C, H, W) float, normalised) -> (B, C, H, W), x's dtype.
    """

    def __init__(
        self,
        ops: Sequence[str] | None = None,
        num_ops: int = 4,
        mean: Sequence[float] = CIFAR100_MEAN,
        std: Sequence[float] = CIFAR100_STD,
        temperature: float = 0.05,
        cutout_size: int | None = None,
        init_probability: float = 0.5,
        init_magnitude: float = 0.5,
        seed: int | None = None,
        apply_logit: str = "learned",
        signed: bool = True,
    ) -> None:
        super().__init__()
        self.ops = self._check_ops(ops)
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) or not 1 <= num_ops <= len(self.ops):
            raise ValueError(
                f"num_ops must be an integer from 1 to the number of ops ({len(self.ops)}), got {num_ops!r}"
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if cutout_size is not None and (isinstance(cutout_size, bool) or not cutout_size >= 1):
            raise ValueError(f"cutout_size must be a positive number of pixels or None, got {cutout_size!r}")
        for name, value in (("init_probability", init_probability), ("init_magnitude", init_magnitude)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if apply_logit not in APPLY_LOGITS:
            raise ValueError(f"apply_logit must be one of {APPLY_LOGITS}, got {apply_logit!r}")
        self.num_ops, self.temperature, self.cutout_size = num_ops, float(temperature), cutout_size
        self.apply_logit, self.signed = apply_logit, bool(signed)
        self.learned = tuple(op for op in self.ops if OPS[op].family != "fixed")
        self._magnitude_index = {op: i for i, op in enumerate(self.learned)}
        self.probability_logits = nn.Parameter(torch.full((len(self.ops),), _logit(init_probability)))
        self.magnitude_logits = nn.Parameter(torch.full((len(self.learned),), _logit(init_magnitude)))
        self.register_buffer("mean", torch.zeros(0), persistent=True)
        self.register_buffer("std", torch.zeros(0), persistent=True)
        self.set_normalisation(mean, std)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(torch.randint(0, 2**62, ())) if seed is None else int(seed))

    # -- configuration ----------------------------------------------------------------------------
    @staticmethod
    def _check_ops(ops: Sequence[str] | None) -> tuple[str, ...]:
        if ops is None:
            return ALL_OPS
        if isinstance(ops, str) or not isinstance(ops, Sequence) or not ops:
            raise ValueError(
                f"ops must be a non-empty list of op names, got {ops!r}; valid ops: {', '.join(ALL_OPS)}"
            )
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ValueError(f"ops: unknown op names {unknown}; valid ops: {', '.join(ALL_OPS)}")
        twice = sorted({op for op in ops if list(ops).count(op) > 1})
        if twice:
            raise ValueError(f"ops: {twice} listed more than once")
        return tuple(ops)

    def set_normalisation(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Set the per-channel statistics the inputs were normalised with (one value per channel)."""
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0 or mean_t.numel() != std_t.numel():
            raise ValueError(
                f"mean and std must have one value per channel, got {mean_t.numel()} and {std_t.numel()} values"
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be > 0 in every channel, got {std_t.tolist()}")
        rgb = [op for op in self.ops if OPS[op].needs_rgb]
        if rgb and mean_t.numel() != 3:
            raise ValueError(
                f"mean/std have {mean_t.numel()} values, but the ops {rgb} need RGB images: give 3 values "
                "(or leave those ops out of ops)"
            )
        device = self.probability_logits.device
        self.mean = mean_t.to(device)
        self.std = std_t.to(device)

    # -- what it learned --------------------------------------------------------------------------
    def relaxed_logits(self) -> Tensor:
        """The logit of each op's relaxed Bernoulli, (len(ops),)."""
        logits = self.probability_logits
        return torch.sigmoid(logits) if self.apply_logit == "sigmoid" else logits

    @property
    def probabilities(self) -> Tensor:
        """Apply probability of each op, (len(ops),), in ``ops`` order: the chance that its relaxed
        Bernoulli sample is above 1/2, sigmoid(logit)."""
        return torch.sigmoid(self.relaxed_logits())

    @property
    def magnitudes(self) -> Tensor:
        """Magnitude of each learned op as a fraction of its range, (len(learned),)."""
        return torch.sigmoid(self.magnitude_logits)

    def summary(self) -> dict[str, dict[str, float]]:
        """{op: {"p": apply probability, "m": magnitude fraction (learned ops only)}}."""
        p, m = self.probabilities.detach().cpu().tolist(), self.magnitudes.detach().cpu().tolist()
        out: dict[str, dict[str, float]] = {}
        for i, op in enumerate(self.ops):
            out[op] = {"p": p[i]}
            if op in self._magnitude_index:
                out[op]["m"] = m[self._magnitude_index[op]]
        return out

    # -- random state (checkpointed with the module) ----------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict) and "generator" in state:
            self.generator.set_state(state["generator"].cpu())

    def draw(self, generator: torch.Generator | None = None) -> AugmentationDraw:
        """The random choices of one call (consumes the generator as ``forward`` does)."""
        g = self.generator if generator is None else generator
        n = len(self.ops)
        chosen = torch.randperm(n, generator=g)[: self.num_ops].tolist()
        signs = torch.randint(0, 2, (n,), generator=g).float() * 2.0 - 1.0
        uniform = torch.rand(n, generator=g).clamp(1e-6, 1.0 - 1e-6)
        centre = torch.rand(2, generator=g).tolist()
        return AugmentationDraw(tuple(chosen), signs, uniform, (centre[0], centre[1]))

    # -- the op -----------------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating-point batch (B, C, H, W), got {shape}")
        rgb = [op for op in self.ops if OPS[op].needs_rgb]
        if rgb and x.shape[1] != 3:
            raise ValueError(f"x must be RGB (B, 3, H, W) for the ops {rgb}, got {tuple(x.shape)}")
        if x.shape[1] != self.mean.numel():
            raise ValueError(
                f"x has {x.shape[1]} channels but mean/std have {self.mean.numel()} values (one per channel)"
            )

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        self._check_input(x)
        d = self.draw(generator)
        h, w = x.shape[2:]
        top_left = (int(d.centre[0] * h), int(d.centre[1] * w))
        return self._combine(x, d.chosen, None, d.signs, d.uniform, top_left)

    def forward_packed(self, x: Tensor, packed: Tensor) -> Tensor:
        """The augmentation of a draw made beforehand: ``packed`` is ``draw().packed(x.device)``.

        Every op is computed and the ones not chosen are weighted by zero, so the call has no
        branch on the draw and reads nothing on the host: torch.compile traces it into one graph
        for every draw, and a CUDA graph can capture it (the draw an input updated between
        replays). Gives ``forward``'s result for the same draw (up to the order of the sum), at the
        cost of the ops not chosen; ``forward`` runs only the chosen ones. Gradients as ``forward``.
        """
        self._check_input(x)
        n = len(self.ops)
        if not isinstance(packed, Tensor) or packed.shape != (3 * n + 2,):
            shape = tuple(packed.shape) if isinstance(packed, Tensor) else type(packed).__name__
            raise ValueError(
                f"packed must be a draw packed by AugmentationDraw.packed, shape ({3 * n + 2},) for "
                f"{n} ops, got {shape}"
            )
        if packed.device != x.device:
            raise ValueError(f"packed is on {packed.device} but x is on {x.device}")
        chosen, signs, uniform, centre = packed.float().split([n, n, n, 2])
        return self._combine(x, range(n), chosen, signs, uniform, centre)

    def _combine(
        self,
        x: Tensor,
        ops: Sequence[int],
        weights: Tensor | None,
        signs: Tensor,
        uniform: Tensor,
        cutout_centre: tuple[int, int] | Tensor,
    ) -> Tensor:
        """x + sum over ``ops`` of p_k (op_k(x) - x) (times weights[k] when given), in pixel units.
        ``cutout_centre``: the cutout centre as pixel indices (ints) or fractions (a (2,) tensor)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x if x.dtype == torch.float64 else x.float()
            _, c, h, w = xf.shape
            mean = self.mean.to(xf.dtype).view(1, c, 1, 1)
            std = self.std.to(xf.dtype).view(1, c, 1, 1)
            pixels = xf * std + mean
            noise = (torch.log(uniform) - torch.log1p(-uniform)).to(xf.device, non_blocking=True)
            p = torch.sigmoid((self.relaxed_logits().to(xf.dtype) + noise) / self.temperature)
            if weights is not None:
                p = p * weights.to(p.dtype)
            magnitudes = self.magnitudes.to(xf.dtype)
            signs = signs.to(xf.device, xf.dtype, non_blocking=True)
            delta = torch.zeros_like(pixels)
            for k in ops:
                name = self.ops[k]
                spec = OPS[name]
                if name == "cutout":
                    size = self.cutout_size or max(h, w)
                    if isinstance(cutout_centre, Tensor):
                        y = cutout_at(pixels, cutout_centre, size, self.mean)
                    else:
                        y = cutout(pixels, cutout_centre[0], cutout_centre[1], size, self.mean)
                elif name == "equalize":
                    y = equalize(pixels)
                elif name == "invert":
                    y = invert(pixels)
                else:
                    m = magnitudes[self._magnitude_index[name]]
                    if spec.signed and self.signed:
                        m = m * signs[k]
                    assert spec.apply is not None
                    y = spec.apply(pixels, m, h, w)
                delta = torch.addcmul(delta, p[k], y - pixels)
            out = xf + delta / std
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"ops={list(self.ops)}, num_ops={self.num_ops}, temperature={self.temperature}, "
            f"apply_logit={self.apply_logit!r}, signed={self.signed}"
        )


__all__ = ["APPLY_LOGITS", "CIFAR100_MEAN", "CIFAR100_STD", "AugmentationDraw", "LearnedAugmentation"]
