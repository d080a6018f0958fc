"""A bar chart of accuracies as a PNG: matplotlib when installed, else the built-in canvas."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from tskd_fast.plot.png import GLYPH_H, Canvas

BACKENDS = ("auto", "matplotlib", "builtin")
# Bar colours by kind (RGB): the teacher, the student alone, and the distilled students.
COLOURS = {"teacher": (150, 150, 150), "baseline": (230, 140, 60), "method": (60, 110, 190)}


@dataclass(frozen=True)
class Bar:
    """One bar: its label, value, kind ("teacher", "baseline" or "method") and the text above it."""

    label: str
    value: float
    kind: str = "method"
    note: str = ""


def _check(bars: Sequence[Bar], backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not bars:
        raise ValueError("bars must hold at least one Bar")
    for bar in bars:
        if bar.kind not in COLOURS:
            raise ValueError(f"bar {bar.label!r}: kind must be one of {tuple(COLOURS)}, got {bar.kind!r}")
        if not math.isfinite(bar.value):
            raise ValueError(f"bar {bar.label!r}: value must be finite, got {bar.value}")


def bar_chart(
    path: str,
    bars: Sequence[Bar],
    title: str,
    ylabel: str = "test top-1 (%)",
    reference: float | None = None,
    backend: str = "auto",
) -> str:
    """Write the bars as a PNG at ``path`` (a dashed line at ``reference``, e.g. the student
    alone); returns the backend used: "matplotlib" or "builtin" ("auto" takes matplotlib when it
    imports)."""
    _check(bars, backend)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if backend in ("auto", "matplotlib"):
        try:
            import matplotlib
        except ImportError:
            if backend == "matplotlib":
                raise
        else:
            matplotlib.use("Agg")
            _matplotlib_chart(path, bars, title, ylabel, reference)
            return "matplotlib"
    with open(path, "wb") as f:
        f.write(_builtin_chart(bars, title, ylabel, reference).png())
    return "builtin"


def _top(bars: Sequence[Bar], reference: float | None) -> float:
    highest = max([b.value for b in bars] + ([reference] if reference is not None else []))
    return max(10.0, math.ceil(highest / 10.0) * 10.0)


def _matplotlib_chart(
    path: str, bars: Sequence[Bar], title: str, ylabel: str, reference: float | None
) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.1 * len(bars) + 2.0, 4.0), dpi=120)
    xs = range(len(bars))
    colours = [tuple(c / 255 for c in COLOURS[b.kind]) for b in bars]
    ax.bar(xs, [b.value for b in bars], color=colours)
    for x, b in zip(xs, bars):
        ax.text(x, b.value, f"{b.value:.1f}\n{b.note}".rstrip(), ha="center", va="bottom", fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=0.8)
    ax.set_xticks(list(xs), [b.label for b in bars], rotation=20, ha="right")
    ax.set_ylim(0, _top(bars, reference) * 1.12)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _builtin_chart(bars: Sequence[Bar], title: str, ylabel: str, reference: float | None) -> Canvas:
    scale = 2
    line = (GLYPH_H + 3) * scale
    left, right, top, bottom = 70, 20, 20 + 2 * line, 20 + 2 * line
    slot = max(90, max(Canvas.text_width(b.label, scale) for b in bars) + 16)
    plot_w, plot_h = slot * len(bars), 260
    width = max(left + plot_w + right, Canvas.text_width(title, scale) + 40)
    canvas = Canvas(width, top + plot_h + bottom)
    black, grey = (0, 0, 0), (200, 200, 200)
    canvas.text(20, 14, title, black, scale)
    canvas.text(20, 14 + line, ylabel, (90, 90, 90), 1)
    y_max = _top(bars, reference)

    def y_of(value: float) -> int:
        return top + plot_h - round(plot_h * max(0.0, min(value, y_max)) / y_max)

    for tick in range(0, int(y_max) + 1, 10 if y_max <= 100 else int(y_max) // 10):
        y = y_of(tick)
        canvas.rect(left, y, left + plot_w, y + 1, grey)
        label = f"{tick}"
        canvas.text(left - 8 - Canvas.text_width(label, 1), y - GLYPH_H // 2, label, black, 1)
    for i, bar in enumerate(bars):
        x0 = left + i * slot + slot // 6
        x1 = left + (i + 1) * slot - slot // 6
        canvas.rect(x0, y_of(bar.value), x1, y_of(0.0), COLOURS[bar.kind])
        value = f"{bar.value:.1f}"
        centre = (x0 + x1) // 2
        above = y_of(bar.value) - line - (line if bar.note else 0)
        canvas.text(centre - Canvas.text_width(value, scale) // 2, above, value, black, scale)
        if bar.note:
            canvas.text(
                centre - Canvas.text_width(bar.note, scale) // 2, above + line, bar.note, black, scale
            )
        canvas.text(
            left + i * slot + (slot - Canvas.text_width(bar.label, scale)) // 2,
            top + plot_h + 8,
            bar.label,
            black,
            scale,
        )
    canvas.rect(left, top, left + 1, top + plot_h + 1, black)
    canvas.rect(left, top + plot_h, left + plot_w, top + plot_h + 1, black)
    if reference is not None:
        y = y_of(reference)
        for x in range(left, left + plot_w, 8):
            canvas.rect(x, y, x + 4, y + 1, black)
    return canvas


__all__ = ["BACKENDS", "Bar", "bar_chart"]
