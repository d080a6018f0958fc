"""Cost of TST against plain KD on this machine: one training step of each, one search step, and the
augmentation module alone; time (median, p20-p80), peak memory, and the top ops of the profiler.

    python benchmarks/tst_step.py [--device cpu|cuda] [--teacher resnet20] [--student resnet8]
                                  [--batch 64] [--classes 100] [--rounds 5] [--repeat 4]
                                  [--compile default|reduce-overhead|max-autotune]

Steps (float32, channels_last as the default run, SGD step included where the student learns):
* ``kd B``: CE + KD on the loader batch of B images;
* ``tst student B``: the same loader batch plus its B augmented copies (the student and teacher
  see 2B images), the module run without gradient;
* ``kd 2B``: plain KD on 2B images, to separate the module's own cost from the doubled batch;
* ``tst search B``: one module update (student and teacher forward + backward to the input);
* ``augment B`` / ``augment B + backward``: the module alone, without / with gradient;
* ``augment packed B``: the module on a draw made beforehand, every op computed and weighted by it
  (what a compiled step runs: ``LearnedAugmentation.forward_packed``), eagerly;
* with ``--compile MODE``: ``kd B`` and ``tst student B`` compiled as ``trainer.compile=MODE``
  compiles them.
The implementations alternate within each round (the machine may be shared); the table reports
the median over rounds of each round's median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import peak_memory_bytes, time_call  # noqa: E402
from kd_loss_table import machine  # noqa: E402

from tskd_fast.distillers import RunInfo, build_from_config  # noqa: E402
from tskd_fast.engine.compile import COMPILE_MODES  # noqa: E402
from tskd_fast.engine.compile import student_step as compiled_step  # noqa: E402
from tskd_fast.engine.config import schema_defaults  # noqa: E402
from tskd_fast.models import build_model  # noqa: E402


def build(method: str, teacher: str, student: str, classes: int, device: str):
    torch.manual_seed(0)
    cfg = {**schema_defaults("shapes", method)["distiller"], "name": method, "terms": {"ce": 0.1, "kd": 0.9}}
    s, t = build_model(student, classes), build_model(teacher, classes)
    d = build_from_config(s, t, cfg).to(device)
    d.to(memory_format=torch.channels_last)
    cifar = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    d.bind_run(
        RunInfo(device=torch.device(device), amp_dtype=None, run_dir=None, mean=cifar[0], std=cifar[1])
    )
    d.train()
    opt = torch.optim.SGD(d.student.parameters(), lr=0.01, momentum=0.9)
    return d, opt


def student_step(d, opt, x, y, mode="false"):
    forward_train = compiled_step(d, mode)

    def step():
        _, losses = forward_train(x, y)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--teacher", default="resnet20")
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--compile", choices=COMPILE_MODES[1:], help="also time the compiled student steps")
    args = parser.parse_args()
    dev, b = args.device, args.batch
    kd, kd_opt = build("kd", args.teacher, args.student, args.classes, dev)
    tst, tst_opt = build("tst", args.teacher, args.student, args.classes, dev)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2 * b, 3, 32, 32, generator=gen).to(dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (2 * b,), generator=gen).to(dev)
    tst.on_phase_pass_start(0, 0, 1)

    def augment_backward():
        tst.augment(x[:b]).sum().backward()
        tst.augment.zero_grad(set_to_none=True)

    cases = {
        f"kd {b}": student_step(kd, kd_opt, x[:b], y[:b]),
        f"tst student {b} (+{b} augmented)": student_step(tst, tst_opt, x[:b], y[:b]),
        f"kd {2 * b}": student_step(kd, kd_opt, x, y),
        f"tst search {b}": lambda: tst.phase_step(x[:b], y[:b], 0, 0),
        f"augment {b}": lambda: tst.augment(x[:b]).detach(),
        f"augment {b} + backward": augment_backward,
        f"augment packed {b}": lambda: tst.augment.forward_packed(
            x[:b], tst.augment.draw().packed(dev)
        ).detach(),
    }
    if args.compile:
        for name, d in ((f"kd {b}", kd), (f"tst student {b} (+{b} augmented)", tst)):
            step = student_step(
                d, torch.optim.SGD(d.student.parameters(), lr=0.01, momentum=0.9), x[:b], y[:b], args.compile
            )
            step()  # compiles
            cases[f"{name} {args.compile}"] = step
    for fn in cases.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            samples[name].append(time_call(fn, dev, warmup=1, repeat=args.repeat)["median"])
    base = statistics.median(samples[f"kd {b}"])
    print(
        f"\nmachine: {machine()}, device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"{args.teacher} -> {args.student}, {args.classes} classes, 32x32 images, float32, channels_last\n")
    print("| step | median ms | p20-p80 over rounds | vs kd B | peak memory MiB |")
    print("|---|---|---|---|---|")
    for name, fn in cases.items():
        s = sorted(samples[name])
        med = statistics.median(s)
        peak = peak_memory_bytes(fn, dev) / 2**20
        lo, hi = s[int(0.2 * (len(s) - 1))], s[int(0.8 * (len(s) - 1))]
        print(f"| {name} | {med:.1f} | {lo:.1f}-{hi:.1f} | {med / base:.2f}x | {peak:.1f} |")
    if args.no_profile:
        return
    for name in (f"tst student {b} (+{b} augmented)", f"tst search {b}", f"augment {b}"):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                cases[name]()
        print(f"\ntop ops of `{name}` (self CPU time, 3 steps):")
        table = prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=40
        )
        print(table)


if __name__ == "__main__":
    main()
