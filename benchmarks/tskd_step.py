"""One whole ``tskd`` training step of a review epoch (student + teacher + three snapshots + the
three ConvLSTM encoder–forecasters, forward + backward + SGD step, float32): with the fused gate
op against the same distiller with the PyTorch reference gates (``distiller.tskd.backend=reference``).

    python benchmarks/tskd_step.py [--device cpu|cuda] [--config configs/cifar100/tskd/X.yaml]
        [--batch 64] [--channels-last] [--repeat N] [--compile default|reduce-overhead|max-autotune]

The teacher has random weights (the timing does not depend on them). Both distillers start from
the same weights and snapshots; the implementations alternate step by step. ``--compile MODE``
adds both steps compiled as ``trainer.compile=MODE`` compiles them (tskd_fast.engine.compile).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import peak_memory_bytes  # noqa: E402
from convlstm_step import report, time_alternating  # noqa: E402

from tskd_fast.engine.build import build_distiller  # noqa: E402
from tskd_fast.engine.compile import COMPILE_MODES, student_step  # noqa: E402
from tskd_fast.engine.config import load_config  # noqa: E402
from tskd_fast.engine.optim import build_optimizer  # noqa: E402
from tskd_fast.models import build_model  # noqa: E402


def build(config: str, backend: str, device: str, channels_last: bool):
    cfg = load_config(config, [f"distiller.tskd.backend={backend}"])
    torch.manual_seed(0)
    student = build_model(cfg["student"]["name"], 100)
    teacher = build_model(cfg["teacher"]["name"], 100)
    d = build_distiller(cfg, student, teacher).to(device)
    if channels_last:
        d.to(memory_format=torch.channels_last)
    d.train()
    # Three memory epochs (the student moving between them), then the review epoch.
    gen = torch.Generator().manual_seed(1)
    for epoch in range(3):
        d.on_epoch_start(epoch, 8)
        with torch.no_grad():
            for p in d.student.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=gen).to(device))
        d.on_epoch_end(epoch)
    d.on_epoch_start(3, 8)
    assert d.reviewing
    return d, build_optimizer(d.param_groups(), cfg["solver"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--config", default="configs/cifar100/tskd/resnet32x4_resnet8x4.yaml")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--compile", choices=COMPILE_MODES[1:], help="also time the compiled steps")
    args = parser.parse_args()
    device = args.device
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    gen = torch.Generator().manual_seed(2)
    image = torch.randn(args.batch, 3, 32, 32, generator=gen).to(device)
    if args.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 100, (args.batch,), generator=gen).to(device)

    def step_of(d, opt, mode="false"):
        forward_train = student_step(d, mode)

        def step():
            _, losses = forward_train(image, target, epoch=3)
            opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            opt.step()

        return step

    steps = {}
    for name, backend in (("fused", "auto"), ("reference", "reference")):
        steps[name] = step_of(*build(args.config, backend, device, args.channels_last))
    if args.compile:
        for name, backend in (("fused", "auto"), ("reference", "reference")):
            compiled = step_of(*build(args.config, backend, device, args.channels_last), args.compile)
            compiled()  # compiles
            steps[f"{args.compile} {name}"] = compiled
    results = time_alternating(steps, device, args.repeat, warmup=2)
    peaks = {name: peak_memory_bytes(step, device) for name, step in steps.items()}
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    layout = "channels_last" if args.channels_last else "NCHW"
    title = (
        f"tskd review-epoch training step ({os.path.basename(args.config)[:-5]}, B={args.batch}, 32x32, "
        f"float32, {layout}): forward + backward + SGD step; {where}"
    )
    report(results, peaks, title)


if __name__ == "__main__":
    main()
