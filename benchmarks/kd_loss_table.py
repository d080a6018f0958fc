"""Forward + backward of the KD loss (T = 4, batchmean, float32): eager PyTorch, torch.compile and
the fused kernel, as a markdown table with speed-ups, achieved bandwidth and peak memory.

    python benchmarks/kd_loss_table.py [--device cpu|cuda] [--repeat N] [--no-compile]

Bandwidth uses the minimal-bytes model of the fused op: read student and teacher once, write
the gradient once (3 * B * C * 4 bytes).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

# Inductor's background pool of compile workers would share the CPU with the timed code.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import peak_memory_bytes, time_call  # noqa: E402
from kd_loss_cases import (  # noqa: E402
    SHAPES,
    TEMPERATURE,
    dtd_ka_implementations,
    forward_backward,
    implementations,
    make_inputs,
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (
        f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )


def table(title: str, impls: dict, device: str, repeat: int, with_target: bool) -> None:
    print(f"\n{title}\n")
    print("| B x C | implementation | median ms (p20-p80) | fused speed-up | GB/s (3BC*4) | peak MiB |")
    print("|" + "---|" * 6)
    for rows, classes in SHAPES:
        student, teacher, target = make_inputs(rows, classes, device)
        extra = (target,) if with_target else ()
        results = {}
        for name, fn in impls.items():
            step = forward_backward(fn, student, teacher, True, *extra)
            results[name] = time_call(step, device, warmup=3, repeat=repeat)
            student.grad = None
            results[name]["peak"] = peak_memory_bytes(
                forward_backward(fn, student, teacher, False, *extra), device
            )
        fused_ms = results["fused"]["median"]
        minimal_bytes = 3 * rows * classes * 4
        for name, r in results.items():
            speedup = "" if name == "fused" else f"{r['median'] / fused_ms:.1f}x"
            gbs = minimal_bytes / (r["median"] * 1e-3) / 1e9
            print(
                f"| {rows} x {classes} | {name} | {r['median']:.3f} ({r['p20']:.3f}-{r['p80']:.3f}) | "
                f"{speedup} | {gbs:.1f} | {r['peak'] / 2**20:.1f} |"
            )
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    parser.add_argument("--no-dtd", action="store_true", help="skip the DTD + KA table")
    args = parser.parse_args()

    print(f"Machine: {machine() if args.device == 'cpu' else torch.cuda.get_device_name()}")
    compile_ = not args.no_compile
    table(
        f"KD loss, T = {TEMPERATURE}, batchmean, float32, forward + backward",
        implementations(args.device, with_compile=compile_),
        args.device,
        args.repeat,
        with_target=False,
    )
    if not args.no_dtd:
        table(
            "DTD temperatures (flsw) + probability shift + KL + CE, float32, forward + backward",
            dtd_ka_implementations(args.device, with_compile=compile_),
            args.device,
            args.repeat,
            with_target=True,
        )


if __name__ == "__main__":
    main()
