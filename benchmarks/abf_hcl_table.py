"""Forward + backward of ReviewKD's ABF fusion and HCL (float32): eager PyTorch reference,
torch.compile(reference) and the fused kernels, as markdown tables with speed-ups, achieved
bandwidth, the copy bandwidth measured in the same run, and peak memory.

    python benchmarks/abf_hcl_table.py [--device cpu|cuda] [--repeat N] [--no-compile]
                                       [--channels-last] [--only abf|hcl]

Minimal-bytes models: HCL reads fs and ft and writes the gradient (3 x 4 bytes per element, all
stage pairs together); ABF fusion reads x, y (forward) and grad, x, y (backward) and writes
fused, dx and dy (5 x 4 bytes per element of x plus 3 x 4 per element of y).
"""

from __future__ import annotations

import argparse
import os
import sys

# Inductor's background pool of compile workers would share the CPU with the timed code.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import peak_memory_bytes, time_call  # noqa: E402
from kd_loss_table import machine  # noqa: E402

from tskd_fast import functional as F  # noqa: E402
from tskd_fast import reference  # noqa: E402

# (name, N, M, h, w, h', w'): ABF fusions of resnet32x4 -> resnet8x4 (CIFAR) and R34 -> R18.
ABF_SHAPES = [
    ("CIFAR 256@8 <- 1", 64, 256, 8, 8, 1, 1),
    ("CIFAR 128@16 <- 8", 64, 128, 16, 16, 8, 8),
    ("CIFAR 64@32 <- 16", 64, 64, 32, 32, 16, 16),
    ("R18 512@7 <- 1", 32, 512, 7, 7, 1, 1),
    ("R18 256@14 <- 7", 32, 256, 14, 14, 7, 7),
    ("R18 128@28 <- 14", 32, 128, 28, 28, 14, 14),
    ("R18 64@56 <- 28", 32, 64, 56, 56, 28, 28),
]
# Every stage pair of one HCL call: (name, N, [(C, H)]).
HCL_SETS = [
    ("resnet32x4 -> resnet8x4", 64, [(64, 32), (128, 16), (256, 8), (256, 1)]),
    ("R34 -> R18", 32, [(64, 56), (128, 28), (256, 14), (512, 7), (512, 1)]),
]


def copy_gbs(nbytes: int, device: str, repeat: int) -> float:
    """Bandwidth of a plain tensor copy of `nbytes` (read + write counted), GB/s."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    ms = time_call(lambda: dst.copy_(src), device, warmup=3, repeat=repeat)["median"]
    return 2 * nbytes / (ms * 1e-3) / 1e9


def abf_impls(device: str, with_compile: bool) -> dict:
    backend = "cpu" if device == "cpu" else "auto"
    impls = {
        "fused": lambda x, y, w, b: F.abf_fuse(x, y, w, b, backend=backend),
        "eager reference": reference.abf_fuse,
    }
    if with_compile:
        impls["compile reference"] = torch.compile(reference.abf_fuse, dynamic=False)
    return impls


def hcl_impls(device: str, with_compile: bool) -> dict:
    backend = "cpu" if device == "cpu" else "auto"
    impls = {"fused": lambda s, t: F.hcl_loss(s, t, backend=backend), "eager reference": reference.hcl_loss}
    if with_compile:
        impls["compile reference"] = torch.compile(reference.hcl_loss, dynamic=False)
    return impls


def measure(impls: dict, leaves, call, device: str, repeat: int) -> dict:
    """Time call(fn, leaves) (a forward + backward) and its peak memory for every implementation;
    the gradients of `leaves` are reset before each timed call (and not counted in the peak)."""

    def clear():
        for t in leaves:
            t.grad = None

    def timed(fn):
        def run():
            clear()
            call(fn, leaves)

        return run

    results = {}
    for name, fn in impls.items():
        results[name] = time_call(timed(fn), device, warmup=3, repeat=repeat)
        clear()
        results[name]["peak"] = peak_memory_bytes(lambda fn=fn: call(fn, leaves), device)
        clear()
    return results


def print_rows(label: str, results: dict, minimal_bytes: int, copy: float) -> None:
    fused_ms = results["fused"]["median"]
    for name, r in results.items():
        speedup = "" if name == "fused" else f"{r['median'] / fused_ms:.1f}x"
        gbs = minimal_bytes / (r["median"] * 1e-3) / 1e9
        print(
            f"| {label} | {name} | {r['median']:.3f} ({r['p20']:.3f}-{r['p80']:.3f}) | {speedup} | "
            f"{gbs:.1f} ({100 * gbs / copy:.0f}% of copy {copy:.1f}) | {r['peak'] / 2**20:.1f} |"
        )
    sys.stdout.flush()


def abf_table(device: str, repeat: int, with_compile: bool, channels_last: bool) -> None:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    print(f"\nABF fusion, float32, {'channels_last' if channels_last else 'NCHW'}, forward + backward\n")
    print(
        "| shape (N=B) | implementation | median ms (p20-p80) | fused speed-up | GB/s (min. bytes) | peak MiB |"
    )
    print("|" + "---|" * 6)
    impls = abf_impls(device, with_compile)
    for label, n, m, h, w, yh, yw in ABF_SHAPES:
        gen = torch.Generator().manual_seed(n * m + h)
        x = (
            torch.randn(n, m, h, w, generator=gen)
            .to(device)
            .contiguous(memory_format=fmt)
            .requires_grad_(True)
        )
        y = (
            torch.randn(n, m, yh, yw, generator=gen)
            .to(device)
            .contiguous(memory_format=fmt)
            .requires_grad_(True)
        )
        weight = (torch.randn(2, 2 * m, 1, 1, generator=gen) / m**0.5).to(device).requires_grad_(True)
        bias = torch.zeros(2, device=device, requires_grad=True)
        grad = torch.randn(n, m, h, w, generator=gen).to(device).contiguous(memory_format=fmt)

        results = measure(
            impls, (x, y, weight, bias), lambda fn, a, g=grad: fn(*a).backward(g), device, repeat
        )
        minimal = 4 * (5 * x.numel() + 3 * y.numel())
        print_rows(f"{label} (N={n})", results, minimal, copy_gbs(4 * x.numel(), device, repeat))


def hcl_table(device: str, repeat: int, with_compile: bool, channels_last: bool) -> None:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    print(
        f"\nHCL over all stage pairs, levels (4, 2, 1), float32, {'channels_last' if channels_last else 'NCHW'}, "
    )
    print("forward + backward\n")
    print(
        "| stage pairs | implementation | median ms (p20-p80) | fused speed-up | GB/s (3 x 4 B/elem) | peak MiB |"
    )
    print("|" + "---|" * 6)
    impls = hcl_impls(device, with_compile)
    for label, n, stages in HCL_SETS:
        gen = torch.Generator().manual_seed(n + len(stages))
        students = [
            torch.randn(n, c, s, s, generator=gen)
            .to(device)
            .contiguous(memory_format=fmt)
            .requires_grad_(True)
            for c, s in stages
        ]
        teachers = [
            torch.randn(n, c, s, s, generator=gen).to(device).contiguous(memory_format=fmt) for c, s in stages
        ]

        results = measure(
            impls, students, lambda fn, a, t=teachers: fn(list(a), t).backward(), device, repeat
        )
        elements = sum(s.numel() for s in students)
        print_rows(f"{label} (N={n})", results, 3 * 4 * elements, copy_gbs(4 * elements, device, repeat))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    parser.add_argument("--channels-last", action="store_true", help="channels_last maps instead of NCHW")
    parser.add_argument("--only", choices=["abf", "hcl"], help="one of the two tables")
    args = parser.parse_args()
    print(f"Machine: {machine() if args.device == 'cpu' else torch.cuda.get_device_name()}")
    if args.only != "abf":
        hcl_table(args.device, args.repeat, not args.no_compile, args.channels_last)
    if args.only != "hcl":
        abf_table(args.device, args.repeat, not args.no_compile, args.channels_last)


if __name__ == "__main__":
    main()
