"""Forward + backward of the ConvLSTM gate math (float32): the fused op against the eager PyTorch
gate math and torch.compile of it, as a markdown table with speed-ups, achieved bandwidth, its
share of the machine's copy bandwidth (measured in the same run) and peak memory.

    python benchmarks/convlstm_gates_table.py [--device cpu|cuda] [--repeat N] [--no-compile]
                                              [--peepholes] [--threads N] [--shapes B,C,H,W ...]

Bandwidth uses the minimal-bytes model of the fused op: the forward reads gates (4 planes) and
c_prev and writes h and c; the backward reads dh, dc, gates and c_prev and writes dgates and
dc_prev: 19 planes of B*C_h*H*W float32 in all. Copy bandwidth: read + write bytes of a large
tensor copy. The implementations alternate call by call, so that a machine shared with other
work slows them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

# Inductor's background pool of compile workers would share the CPU with the timed code.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import copy_bandwidth, peak_memory_bytes, time_alternating  # noqa: E402
from kd_loss_table import machine  # noqa: E402

from tskd_fast import functional as F  # noqa: E402
from tskd_fast import reference  # noqa: E402

SHAPES = [(64, c, s, s) for c in (32, 64, 128) for s in (8, 16, 32)]
PLANES = 19  # minimal-bytes model, in planes of B*C_h*H*W elements


def make_inputs(batch, hidden, height, width, device, peepholes):
    gen = torch.Generator().manual_seed(0)
    gates = (torch.randn(batch, 4 * hidden, height, width, generator=gen) * 2).to(device)
    c_prev = torch.randn(batch, hidden, height, width, generator=gen).to(device)
    dh, dc = torch.randn_like(c_prev), torch.randn_like(c_prev)
    ws = [(torch.randn(hidden, height, width, generator=gen) * 0.5).to(device) for _ in range(3)]
    leaves = [gates.requires_grad_(True), c_prev.requires_grad_(True)]
    if peepholes:
        leaves += [w.requires_grad_(True) for w in ws]
    return leaves, dh, dc


def implementations(device: str, with_compile: bool) -> dict:
    backend = "cpu" if device == "cpu" else "auto"
    impls = {
        "fused": lambda *args: F.convlstm_gates(*args, backend=backend),
        "eager": reference.convlstm_gates,
    }
    if with_compile:
        # One static-shape graph per benchmarked shape: more than dynamo's default of 8.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        impls["torch.compile"] = torch.compile(reference.convlstm_gates, fullgraph=True, dynamic=False)
    return impls


def forward_backward(fn, leaves, dh, dc):
    def step():
        h, c = fn(*leaves)
        return torch.autograd.grad((h, c), leaves, (dh, dc))

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--peepholes", action="store_true", help="with all three (trainable) peepholes")
    parser.add_argument("--shapes", nargs="*", help="B,C_h,H,W cases instead of the default grid")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads); default: torch's")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes] if args.shapes else SHAPES

    print(f"Machine: {machine() if args.device == 'cpu' else torch.cuda.get_device_name()}")
    impls = implementations(args.device, not args.no_compile)
    copy_gbs = []
    title = "with peepholes" if args.peepholes else "no peepholes"
    print(f"\nConvLSTM gates, {title}, float32, forward + backward\n")
    print(
        "| B, C_h, HxW | implementation | median ms (p20-p80) | fused speed-up | GB/s (19 planes) | "
        "% of copy | peak MiB |"
    )
    print("|" + "---|" * 7)
    for batch, hidden, height, width in shapes:
        leaves, dh, dc = make_inputs(batch, hidden, height, width, args.device, args.peepholes)
        steps = {name: forward_backward(fn, leaves, dh, dc) for name, fn in impls.items()}
        results = time_alternating(steps, args.device, repeat=args.repeat)
        copy = copy_bandwidth(args.device, repeat=5)
        copy_gbs.append(copy)
        for name, step in steps.items():
            results[name]["peak"] = peak_memory_bytes(step, args.device)
        fused_ms = results["fused"]["median"]
        minimal_bytes = PLANES * batch * hidden * height * width * 4
        for name, r in results.items():
            speedup = "" if name == "fused" else f"{r['median'] / fused_ms:.1f}x"
            gbs = minimal_bytes / (r["median"] * 1e-3) / 1e9
            print(
                f"| {batch}, {hidden}, {height}x{width} | {name} | {r['median']:.3f} "
                f"({r['p20']:.3f}-{r['p80']:.3f}) | {speedup} | {gbs:.1f} | {100 * gbs / copy:.0f}% | "
                f"{r['peak'] / 2**20:.1f} |"
            )
        sys.stdout.flush()
    print(
        f"\nCopy bandwidth (read + write, 256 MiB, median over the run): {statistics.median(copy_gbs):.1f} GB/s"
    )


if __name__ == "__main__":
    main()
