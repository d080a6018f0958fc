"""``tskd-fast compare``: one teacher, one student per method and the student alone on the same
data, runs shared with ``train`` and reused; the table, its files and the bar chart."""

import json

import numpy as np
import pytest

from tskd_fast.cli import main
from tskd_fast.distillers import methods
from tskd_fast.plot import Bar, bar_chart
from tskd_fast.plot.bar_chart import COLOURS
from tskd_fast.plot.png import read_png

TINY = [
    "dataset.shapes.train_size=64",
    "dataset.shapes.test_size=32",
    "dataset.num_workers=0",
    "teacher.name=resnet8",
    "solver.epochs=1",
    "solver.batch_size=32",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.eval_batch_size=32",
]


def _rows(folder):
    return {row["label"]: row for row in json.loads((folder / "compare.json").read_text())["rows"]}


def test_compare_every_method_then_reuse_every_run(tmp_path, capsys):
    out = tmp_path / "cmp"
    # A train job first: compare takes over its teacher, kd student and baseline runs.
    assert main(["train", "-o", str(out), *TINY]) == 0
    assert main(["compare", "-o", str(out), *TINY, "--chart-backend", "builtin"]) == 0
    printed = capsys.readouterr().out
    every = [m for m in methods() if m != "vanilla"]
    rows = _rows(out)
    assert list(rows) == ["teacher", "student alone", *every]
    for label in ("teacher", "student alone", "kd"):
        assert rows[label]["reused"], label
    assert not any(rows[m]["reused"] for m in every if m != "kd")
    alone = rows["student alone"]["top1"]
    for method in every:
        row = rows[method]
        assert row["run_dir"] == str(out / method) and row["gain"] == pytest.approx(row["top1"] - alone)
        assert row["seconds_per_epoch"] > 0 and row["peak_memory_mib"] > 0
    assert "| kd | resnet8 |" in printed and "gain over the student alone" in printed
    assert (out / "compare.md").read_text().count("| resnet8 |") == len(rows)
    pixels = read_png((out / "compare.png").read_bytes())
    assert pixels.shape[2] == 3 and pixels.shape[1] > 90 * len(rows)
    for colour in COLOURS.values():  # a bar of each kind was drawn
        assert (pixels == np.array(colour, dtype=np.uint8)).all(axis=2).any()

    # Again, with a subset: every run is reused with its numbers.
    assert main(["compare", "kd", "tst", "-o", str(out), *TINY, "--chart-backend", "builtin"]) == 0
    again = _rows(out)
    assert list(again) == ["teacher", "student alone", "kd", "tst"]
    for label, row in again.items():
        assert row["reused"] and row["top1"] == rows[label]["top1"], label


def test_compare_refuses_what_it_sets_itself(tmp_path, capsys):
    assert main(["compare", "nope", "-o", str(tmp_path), *TINY]) == 2
    assert "valid methods" in capsys.readouterr().err
    assert main(["compare", "vanilla", "-o", str(tmp_path), *TINY]) == 2
    assert "student alone" in capsys.readouterr().err
    assert main(["compare", "distiller.name=kd", "-o", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "list methods instead" in err


BARS = [Bar("teacher", 72.5, "teacher"), Bar("alone", 46.0, "baseline"), Bar("kd", 63.2, note="+17.2")]


def test_builtin_bar_chart_draws_bars_to_scale(tmp_path):
    path = tmp_path / "sub" / "chart.png"
    assert bar_chart(str(path), BARS, "a -> b", reference=46.0, backend="builtin") == "builtin"
    pixels = read_png(path.read_bytes())
    heights = {}
    for kind, colour in COLOURS.items():
        mask = (pixels == np.array(colour, dtype=np.uint8)).all(axis=2)
        heights[kind] = mask.any(axis=1).sum()  # rows the bar covers
    # Bar heights follow the values (to the pixel rounding of a 260-pixel axis up to 80 %).
    scale = 260 / 80
    assert heights["teacher"] == pytest.approx(72.5 * scale, abs=2)
    assert heights["baseline"] == pytest.approx(46.0 * scale, abs=2)
    assert heights["method"] == pytest.approx(63.2 * scale, abs=2)


def test_matplotlib_bar_chart(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart.png"
    assert bar_chart(str(path), BARS, "a -> b", reference=46.0) == "matplotlib"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "bars, backend, match",
    [
        ([], "builtin", "at least one"),
        ([Bar("x", float("nan"))], "builtin", "finite"),
        ([Bar("x", 1.0, "other")], "builtin", "kind must be one of"),
        (BARS, "svg", "backend must be one of"),
    ],
)
def test_bar_chart_bad_input(tmp_path, bars, backend, match):
    with pytest.raises(ValueError, match=match):
        bar_chart(str(tmp_path / "c.png"), bars, "t", backend=backend)


def test_peak_memory_of_a_run_on_the_cpu_follows_what_it_allocates():
    import torch

    from tskd_fast.engine.peak_memory import PeakMemory

    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    before = memory.peak()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, every page written
    after = memory.peak()
    del block
    assert before is not None and after - before >= 48 * 2**20
    memory.reset()  # back to the resident set of now, which no longer holds the block
    assert memory.peak() < after
