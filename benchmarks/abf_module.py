"""The whole ABF module (1x1 conv + BN, fusion, 3x3 conv + BN), forward + backward, float32:
``backend="reference"`` (eager PyTorch fusion: upsample, concat, attention conv, sigmoid, weighted
sum) against ``backend="auto"`` (the fused op), as a markdown table of time and peak memory.

    python benchmarks/abf_module.py [--device cpu|cuda] [--repeat N] [--batch B] [--channels-last]

The cases are the fusing ABFs of resnet32x4 -> resnet8x4 (mid 256) and of ImageNet R34 -> R18
(mid 512). The implementations are timed alternately, call by call, so that a shared machine's
load hits both alike. Target (issue 8): auto >= 1.3x faster than eager, with lower peak memory.

A third row, "convs only", times the same module without its fusion (``fuse=False``: the two
convolutions and batch norms, forward + backward, and the residual output): no fusion can make
the module faster than that, so its speed-up over the reference is the bound on any fused one.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import peak_memory_bytes, time_alternating  # noqa: E402

from tskd_fast.nn import ABF  # noqa: E402

# (name, in_channel, mid, out_channel, size of x, size of the residual, default batch)
CASES = [
    ("res8x4 f3", 256, 256, 256, 8, 1, 64),
    ("res8x4 f2", 128, 256, 128, 16, 8, 64),
    ("res8x4 f1", 64, 256, 64, 32, 16, 64),
    ("R18 f2", 128, 512, 128, 28, 14, 32),
    ("R18 f1", 64, 512, 64, 56, 28, 32),
]


def abf_step(abf: ABF, x: torch.Tensor, y: torch.Tensor | None, g_out: torch.Tensor, g_res: torch.Tensor):
    """One forward + backward of ``abf`` (gradients into its parameters, x and y)."""

    def step() -> None:
        abf.zero_grad(set_to_none=True)
        x.grad = None
        if y is not None:
            y.grad = None
        out, res = abf(x, y)
        torch.autograd.backward([out, res], [g_out, g_res])

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--batch", type=int, default=None, help="override every case's batch size")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    args = parser.parse_args()
    device = args.device
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"Machine: {name}, torch {torch.__version__}; memory format {'channels_last' if args.channels_last else 'NCHW'}"
    )
    print(
        "\n| case (B, C_in, mid, h, h') | backend | median ms (p20-p80) | speed-up vs reference | peak MiB |"
    )
    print("|" + "---|" * 5)
    wanted = None if args.cases is None else set(args.cases.split(","))
    for label, c_in, mid, c_out, h, h_res, batch in CASES:
        if wanted is not None and label not in wanted:
            continue
        batch = args.batch or batch
        torch.manual_seed(0)
        ref = ABF(c_in, mid, c_out, True, backend="reference").to(device, memory_format=fmt)
        fused = ABF(c_in, mid, c_out, True, backend="auto").to(device, memory_format=fmt)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(batch, c_in, h, h, device=device).contiguous(memory_format=fmt).requires_grad_()
        y = (
            torch.randn(batch, mid, h_res, h_res, device=device)
            .contiguous(memory_format=fmt)
            .requires_grad_()
        )
        g_out = torch.randn(batch, c_out, h, h, device=device).contiguous(memory_format=fmt)
        g_res = torch.randn(batch, mid, h, h, device=device).contiguous(memory_format=fmt)
        convs = ABF(c_in, mid, c_out, False).to(device, memory_format=fmt)
        steps = {
            "reference": abf_step(ref, x, y, g_out, g_res),
            "auto": abf_step(fused, x, y, g_out, g_res),
            "convs only": abf_step(convs, x, None, g_out, g_res),
        }
        times = time_alternating(steps, device, warmup=3, repeat=args.repeat)
        for backend, step in steps.items():
            # Free every gradient first so that the peak counts only what one step allocates.
            for t in (ref, fused, convs):
                t.zero_grad(set_to_none=True)
            x.grad = y.grad = None
            peak = peak_memory_bytes(step, device) / 2**20
            t = times[backend]
            speedup = f"{times['reference']['median'] / t['median']:.2f}x"
            print(
                f"| {label} ({batch}, {c_in}, {mid}, {h}, {h_res}) | {backend} | "
                f"{t['median']:.2f} ({t['p20']:.2f}-{t['p80']:.2f}) | {speedup} | {peak:.1f} |"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
