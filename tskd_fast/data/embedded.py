"""The embedded default dataset ("shapes"): synthetic CIFAR-shaped images generated from a seed.

It exists so that ``tskd-fast train`` runs a whole teacher -> student distillation with nothing to
download, in a few minutes on a laptop CPU. It is for trying things out (checking an install, a
config, a new distiller) and says nothing about CIFAR or ImageNet accuracy.

Each image (3x32x32, uint8) shows one object on a cluttered background. The class is the pair
(shape, texture) of the object: ``num_shapes`` outline shapes (disk, square, triangle, cross, ring,
diamond, ...) times ``num_textures`` fill patterns (solid, stripes, checks, dots, ...), so classes
that share a shape or a texture look alike; that similarity structure is what a teacher's soft
labels carry and plain one-hot labels do not. Nuisances that carry no label information: position,
size, rotation, the two fill colours, a smooth random background, a smaller distractor object drawn
from the same shape/texture vocabulary, pixel noise, and a fraction ``label_noise`` of training
labels replaced by random classes (the test split is always clean). ``clutter`` scales the
background and the distractor (default 0.5; 1.0 is much harder).

In the default run (resnet20 teacher, resnet8 student, 8 short epochs each on 5,000 images) the
models are far from converged, and the teacher's soft labels make the student learn much faster:
measured on a 2-core CPU, teacher 72.8%, KD student 62.6%, the same student alone 45.0% (seeds 0-2).

The images are a pure function of the arguments (NumPy's PCG64 generator), so every machine builds
the same dataset; generating the default 5,000 + 2,000 images takes a few seconds, and the arrays
are kept in memory (no files are written).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("disk", "square", "triangle", "cross", "ring", "diamond", "bar", "chevron")
TEXTURES = ("solid", "stripes", "checks", "dots", "rings")


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters of the generated dataset (all part of its identity)."""

    num_shapes: int = 5
    num_textures: int = 4
    train_size: int = 5000
    test_size: int = 2000
    label_noise: float = 0.0
    clutter: float = 0.5
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return self.num_shapes * self.num_textures

    def __post_init__(self) -> None:
        if not 1 <= self.num_shapes <= len(SHAPES):
            raise ValueError(f"num_shapes must be in [1, {len(SHAPES)}], got {self.num_shapes}")
        if not 1 <= self.num_textures <= len(TEXTURES):
            raise ValueError(f"num_textures must be in [1, {len(TEXTURES)}], got {self.num_textures}")
        if self.num_classes < 2:
            raise ValueError("the shapes dataset needs at least 2 classes")
        if self.train_size < 1 or self.test_size < 1:
            raise ValueError("train_size and test_size must be positive")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"label_noise must be in [0, 1), got {self.label_noise}")


def class_names(spec: ShapesSpec) -> list[str]:
    """Names of the classes in label order, e.g. "disk/stripes"; label = shape * num_textures + texture."""
    return [f"{s}/{t}" for s in SHAPES[: spec.num_shapes] for t in TEXTURES[: spec.num_textures]]


def _shape_inside(kind: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance-like score (>0 inside) of each shape in object coordinates.

    kind (N,) ints; u, v (N, H, W) object-frame coordinates where the shape spans about [-1, 1].
    """
    r = np.sqrt(u * u + v * v)
    au, av = np.abs(u), np.abs(v)
    scores = [
        1.0 - r,  # disk
        0.85 - np.maximum(au, av),  # square
        np.minimum(v + 0.55, 0.9 - v - 1.8 * au),  # triangle (apex up)
        np.maximum(np.minimum(0.3 - au, 1.0 - av), np.minimum(0.3 - av, 1.0 - au)),  # cross
        np.minimum(r - 0.5, 1.0 - r),  # ring
        1.15 - (au + av),  # diamond
        np.minimum(1.0 - au, 0.35 - av),  # bar
        np.minimum(np.minimum(1.0 - au, 0.3 - np.abs(v - 0.9 * au + 0.3)), v + 0.7),  # chevron
    ]
    out = np.empty_like(u)
    for k, score in enumerate(scores):
        sel = kind == k
        out[sel] = score[sel]
    return out


def _texture(kind: np.ndarray, u: np.ndarray, v: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Fill pattern in [0, 1] per pixel; kind (N,), u, v (N, H, W) object frame, freq (N, 1, 1)."""
    r = np.sqrt(u * u + v * v)
    fu, fv = freq * u, freq * v
    patterns = [
        np.ones_like(u),  # solid
        (np.sin(fu) > 0).astype(u.dtype),  # stripes
        (np.sin(fu) * np.sin(fv) > 0).astype(u.dtype),  # checks
        ((np.cos(fu) + np.cos(fv)) > 0.9).astype(u.dtype),  # dots
        (np.sin(1.4 * freq * r) > 0).astype(u.dtype),  # concentric rings
    ]
    out = np.empty_like(u)
    for k, pat in enumerate(patterns):
        sel = kind == k
        out[sel] = pat[sel]
    return out


def _random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) colours in [0, 1] with random hue, fairly saturated and bright."""
    hue = rng.random(n)
    sat = rng.uniform(0.4, 1.0, n)
    val = rng.uniform(0.5, 1.0, n)
    k = (np.arange(3)[None, :] * 2.0 / 3.0 + hue[:, None]) % 1.0
    base = np.clip(np.abs(k * 6.0 - 3.0) - 1.0, 0.0, 1.0)  # hue -> RGB ramp
    return val[:, None] * (1.0 - sat[:, None] + sat[:, None] * base)


def _draw_objects(
    rng: np.random.Generator,
    canvas: np.ndarray,
    shape: np.ndarray,
    texture: np.ndarray,
    scale_range: tuple[float, float],
    size: int,
    opacity: float = 1.0,
) -> None:
    """Paint one object per image onto canvas (N, H, W, 3) float in place."""
    n = canvas.shape[0]
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    scale = rng.uniform(*scale_range, n).astype(np.float32)[:, None, None]
    cx = rng.uniform(-0.55, 0.55, n).astype(np.float32)[:, None, None]
    cy = rng.uniform(-0.55, 0.55, n).astype(np.float32)[:, None, None]
    angle = rng.uniform(0.0, 2.0 * np.pi, n).astype(np.float32)[:, None, None]
    dx, dy = (xs[None] - cx) / scale, (ys[None] - cy) / scale
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    # Soft edges (about one pixel wide) so shapes are antialiased rather than jagged.
    edge = (2.0 / size) / scale
    alpha = np.clip(_shape_inside(shape, u, v) / edge + 0.5, 0.0, 1.0) * opacity
    freq = rng.uniform(5.5, 8.0, n).astype(np.float32)[:, None, None]
    pattern = _texture(texture, u, v, freq)
    c1 = _random_colours(rng, n).astype(np.float32)[:, None, None, :]
    c2 = _random_colours(rng, n).astype(np.float32)[:, None, None, :]
    fill = pattern[..., None] * c1 + (1.0 - pattern[..., None]) * (0.35 * c2)
    canvas *= 1.0 - alpha[..., None]
    canvas += alpha[..., None] * fill


def _backgrounds(rng: np.random.Generator, n: int, size: int, clutter: float) -> np.ndarray:
    """(n, size, size, 3) smooth random colour fields: a few random plane waves per image."""
    grid = np.arange(size, dtype=np.float32) / size
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    base = _random_colours(rng, n).astype(np.float32) * 0.5
    out = np.broadcast_to(base[:, None, None, :], (n, size, size, 3)).copy()
    for _ in range(3):
        fx, fy = (rng.normal(0.0, 3.0, (2, n)).astype(np.float32))[:, :, None, None]
        phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
        wave = np.sin(2 * np.pi * (fx * xs + fy * ys) + phase)
        amp = (rng.uniform(0.0, 0.25, (n, 3)) * clutter).astype(np.float32)[:, None, None, :]
        out += amp * wave[..., None]
    return out


def generate(spec: ShapesSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 (HWC, like torchvision's CIFAR ``data``) and labels (N,) int64.

    ``split`` is "train" or "test"; the two splits come from independent streams of the same seed.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    n = spec.train_size if split == "train" else spec.test_size
    size = 32
    rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1])
    labels = rng.integers(0, spec.num_classes, n)
    shape, texture = labels // spec.num_textures, labels % spec.num_textures
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    chunk = 1000  # bounds the float32 temporaries to a few tens of MB
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        m = stop - start
        canvas = _backgrounds(rng, m, size, spec.clutter)
        if spec.clutter > 0:
            # The distractor uses the same vocabulary as the classes, so no single cue is enough.
            d_shape = rng.integers(0, spec.num_shapes, m)
            d_texture = rng.integers(0, spec.num_textures, m)
            _draw_objects(rng, canvas, d_shape, d_texture, (0.18, 0.28), size, min(1.0, spec.clutter))
        _draw_objects(rng, canvas, shape[start:stop], texture[start:stop], (0.38, 0.58), size)
        gain = rng.uniform(0.7, 1.2, (m, 1, 1, 1)).astype(np.float32)
        canvas = canvas * gain + rng.normal(0.0, 0.06, canvas.shape).astype(np.float32)
        images[start:stop] = np.clip(canvas * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if split == "train" and spec.label_noise > 0:
        flip = rng.random(n) < spec.label_noise
        labels = np.where(flip, rng.integers(0, spec.num_classes, n), labels)
    return images, labels.astype(np.int64)
