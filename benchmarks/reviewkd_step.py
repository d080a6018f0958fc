"""One whole ``reviewkd`` training step, resnet32x4 -> resnet8x4 on CIFAR-shaped input (B = 64 by
default): teacher forward, student forward, the ABF stack, HCL, CE, backward and the SGD step, with
``distiller.reviewkd.backend=reference`` (eager ABF fusion and HCL) against ``auto`` (fused ops).

    python benchmarks/reviewkd_step.py [--device cpu|cuda] [--repeat N] [--batch B] [--channels-last]
        [--compile default|reduce-overhead|max-autotune]

Both distillers start from the same weights; the steps are timed alternately (see abf_module.py).
``--compile MODE`` adds both steps compiled as ``trainer.compile=MODE`` compiles them.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abf_module import time_alternating  # noqa: E402
from common import peak_memory_bytes  # noqa: E402

from tskd_fast.engine.build import build_distiller  # noqa: E402
from tskd_fast.engine.compile import COMPILE_MODES, student_step  # noqa: E402
from tskd_fast.engine.config import load_config  # noqa: E402
from tskd_fast.engine.optim import build_optimizer  # noqa: E402
from tskd_fast.models import build_model  # noqa: E402

PAIR = ("resnet32x4", "resnet8x4")


def make_step(
    backend: str, student: torch.nn.Module, teacher: torch.nn.Module, device: str, fmt, mode: str = "false"
):
    """A closure running one training step of a fresh reviewkd distiller with ``backend``, compiled
    as ``trainer.compile=mode`` compiles it."""
    cfg = load_config(
        None,
        [
            "distiller.name=reviewkd",
            f"teacher.name={PAIR[0]}",
            f"student.name={PAIR[1]}",
            "distiller.terms.hcl=5",
            f"distiller.reviewkd.backend={backend}",
        ],
    )
    torch.manual_seed(0)  # the same ABF initialisation for every backend
    d = build_distiller(cfg, copy.deepcopy(student), copy.deepcopy(teacher)).to(device, memory_format=fmt)
    d.train()
    d.on_epoch_start(100, 240)  # past the warmup: HCL at full weight
    opt = build_optimizer(d.param_groups(), {**cfg["solver"], "lr": 0.05})
    forward_train = student_step(d, mode)

    def step(image: torch.Tensor, target: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        _, losses = forward_train(image, target, epoch=100)
        sum(losses.values()).backward()
        opt.step()

    step.free_grads = lambda: opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", choices=COMPILE_MODES[1:], help="also time the compiled steps")
    args = parser.parse_args()
    device = args.device
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    teacher, student = build_model(PAIR[0], 100), build_model(PAIR[1], 100)
    image = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    target = torch.randint(0, 100, (args.batch,), device=device)
    steps = {b: make_step(b, student, teacher, device, fmt) for b in ("reference", "auto")}
    if args.compile:
        for b in ("reference", "auto"):
            steps[f"{args.compile} {b}"] = make_step(b, student, teacher, device, fmt, args.compile)
            steps[f"{args.compile} {b}"](image, target)  # compiles
    calls = {b: (lambda s=s: s(image, target)) for b, s in steps.items()}
    times = time_alternating(calls, device, warmup=3, repeat=args.repeat)
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"Machine: {name}, torch {torch.__version__}; {PAIR[0]} -> {PAIR[1]}, B = {args.batch}, float32")
    print("\n| backend | step median ms (p20-p80) | speed-up vs reference (same mode) | peak MiB |")
    print("|---|---|---|---|")
    for backend, call in calls.items():
        for s in steps.values():
            s.free_grads()  # the peak then counts only what one step allocates (the gradients included)
        t = times[backend]
        peak = peak_memory_bytes(call, device) / 2**20
        baseline = times[backend.replace("auto", "reference")]["median"]
        speedup = baseline / t["median"]
        print(
            f"| {backend} | {t['median']:.1f} ({t['p20']:.1f}-{t['p80']:.1f}) | {speedup:.2f}x | {peak:.1f} |"
        )


if __name__ == "__main__":
    main()
