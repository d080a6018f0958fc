"""How far TST's random augmentation draw alone moves the bench's reference / fused step ratio.

    python benchmarks/tst_draws.py [--device cpu|cuda] [--batch 8] [--trials 8] [--draws 30]

TST's step applies augmentation ops drawn at random each step, and the ops differ widely in cost.
Until the bench gave the reference and the fused step each its own copy of the module's
generators, the two drew from one shared stream and so timed different work. This script repeats
the bench's quick step measurement (`tskd-fast bench --quick`: batch 8, one warm-up call, 3 rounds)
`--trials` times in each of two ways, each on its own build of the same seeded models:

* ``shared draws``: both steps draw from the one stream, as the bench did then;
* ``same draws``: each step replays its own copy of the stream, as the bench does now;

and prints each trial's ratio (reference median / fused median) and their range. A spread far from
1x under shared draws and close to 1x under same draws says that a ratio from a few rounds measured
the draw, not the fused ops. Then it times the fused step on `--draws` consecutive draws, one call
each, and prints the fastest, the median and the slowest: how much one draw costs against another.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from tskd_fast.bench.steps import build_step, step_plan
from tskd_fast.bench.timing import Timer, measure, quiet_compile_workers, warm_up


def ratios(pair: dict, device: torch.device, trials: int) -> list[float]:
    """`trials` quick measurements of the {"reference", "auto"} steps: each one's ratio of medians."""
    plan = step_plan(quick=True)
    found = []
    for _ in range(trials):
        call_ms, failed = warm_up(pair, device, plan.warmup)
        if failed:
            raise RuntimeError(f"the tst step failed: {failed}")
        stats = measure(pair, device, plan, call_ms)
        found.append(stats["reference"].median / stats["auto"].median)
    return found


def per_draw_ms(step, device: torch.device, draws: int) -> list[float]:
    """One call of a warmed-up step on each of `draws` consecutive draws, sorted."""
    timer = Timer(device)
    return sorted(timer(step, 1) for _ in range(draws))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--draws", type=int, default=30)
    args = parser.parse_args()
    for name, value in (("--batch", args.batch), ("--trials", args.trials), ("--draws", args.draws)):
        if value < 1:
            parser.error(f"{name} must be a positive integer, got {value}")
    quiet_compile_workers()
    device = torch.device(args.device)
    print(
        f"tst step, batch {args.batch}, {device}: ratio reference / fused, quick plan, {args.trials} trials"
    )
    for label, same in (("shared draws", False), ("same draws", True)):
        fns = build_step("tst", device, args.batch, same_draws=same)
        found = ratios({"reference": fns["reference"], "auto": fns["auto"]}, device, args.trials)
        listed = " ".join(f"{r:.2f}x" for r in found)
        print(f"  {label:<12}: {listed}  (range {min(found):.2f}x-{max(found):.2f}x)")
    times = per_draw_ms(fns["auto"], device, args.draws)  # the same-draws build, warmed up above
    print(
        f"fused step over {args.draws} draws: fastest {times[0]:.1f} ms, median {statistics.median(times):.1f} ms, "
        f"slowest {times[-1]:.1f} ms ({times[-1] / times[0]:.1f}x the fastest)"
    )


if __name__ == "__main__":
    main()
