"""Profile one method's whole training step (the step `tskd-fast bench --ops steps` times), with
the fused ops (auto) and with the reference, and print where each spends its time.

    python3 scripts/profile_step.py tst --device cuda --batch 8 [--steps 5] [--compile default]

With ``--compile MODE`` the step compiled as ``trainer.compile=MODE`` compiles it is profiled too,
with the fused ops (its first calls, which compile, are outside the profile).

For each backend: the wall time per step, then torch.profiler's table of the most expensive ops
(self time on the device for CUDA, self CPU time otherwise). Written for the one-shot GPU check,
where a step that is slower with the fused ops needs a look at what runs in it.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from tskd_fast.bench.steps import build_step
from tskd_fast.engine.compile import COMPILE_MODES


def profile_backend(fn, device: torch.device, steps: int, rows: int) -> None:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        fn()
    sync()
    began = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    print(f"  {1e3 * (time.perf_counter() - began) / steps:.2f} ms per step (wall, {steps} steps)")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        sync()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows))
    if device.type == "cuda":
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", help="a registered method, e.g. tst")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=15, help="ops listed per table")
    parser.add_argument("--compile", choices=COMPILE_MODES[1:], help="also profile the compiled fused step")
    args = parser.parse_args()
    device = torch.device(args.device)
    fns = build_step(args.method, device, args.batch, [args.compile] if args.compile else [])
    names = ["reference", "auto"] + ([f"{args.compile} auto"] if args.compile else [])
    for name in names:
        print(f"== {args.method} step, batch {args.batch}, {device}, backend {name}")
        sys.stdout.flush()
        profile_backend(fns[name], device, args.steps, args.rows)


if __name__ == "__main__":
    main()
