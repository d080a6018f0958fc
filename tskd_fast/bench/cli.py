"""``tskd-fast bench`` / ``python -m tskd_fast.bench``: every fused op against eager PyTorch and
torch.compile on every device present, then whole training steps, in one table each."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import time
from collections.abc import Sequence

from tskd_fast.bench.timing import quiet_compile_workers

# Before torch._inductor is first imported (below, via torch.compile): no compile worker pool.
quiet_compile_workers()

import torch  # noqa: E402

from tskd_fast.bench import report  # noqa: E402
from tskd_fast.bench.bandwidth import copy_bandwidth  # noqa: E402
from tskd_fast.bench.cases import FAMILIES  # noqa: E402
from tskd_fast.bench.runner import Result, fused_backends, run_case  # noqa: E402
from tskd_fast.bench.steps import StepResult, distilling_methods, run_method, step_plan  # noqa: E402
from tskd_fast.bench.timing import Plan  # noqa: E402
from tskd_fast.errors import UserError  # noqa: E402

STEPS = "steps"
STEP_MODES = ("default", "reduce-overhead", "max-autotune")
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def build_parser(prog: str = "tskd-fast bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Time every fused op's forward + backward against the eager PyTorch reference and "
        "torch.compile of it (CPU always; CUDA C++ and Triton kernels on a GPU), then one training step "
        "of each distillation method with the fused ops against the reference, eager and compiled as "
        "trainer.compile compiles it. Prints the median "
        "(20th-80th percentile), the speed-ups, GB/s on each op's minimal-bytes model and as a share "
        "of the copy bandwidth measured in the same run, and peak memory. See benchmarks/README.md.",
    )
    names = ", ".join([*FAMILIES, STEPS])
    parser.add_argument("--ops", default="all", help=f"comma-separated, from: {names} (default all)")
    parser.add_argument(
        "--device",
        default="all",
        help="cpu, cuda or all (default: all present: the CPU, and CUDA when available)",
    )
    parser.add_argument("--dtype", default="float32", help=f"comma-separated, from: {', '.join(DTYPES)}")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one shape per op, fewer repeats, small step batch (~2 min on 2 cores)",
    )
    parser.add_argument("--csv", metavar="PATH", help="write the op rows (and PATH_steps.csv) as CSV")
    parser.add_argument(
        "--json", metavar="PATH", help="write everything (machine, ops, steps, notes) as JSON"
    )
    parser.add_argument(
        "--plot", metavar="PATH", help="chart of the speed-ups: .svg always, .png and others with matplotlib"
    )
    parser.add_argument(
        "--repeat", type=int, help="timed rounds per case (default 20, quick 10; steps 10, quick 3)"
    )
    parser.add_argument(
        "--warmup", type=int, help="warm-up calls per implementation (default 3, quick 2; steps 2, quick 1)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        help="stop a case's rounds after this long, 5 rounds at least (default 10; steps 60, quick 4)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's, all cores; 1 with --overhead)"
    )
    parser.add_argument(
        "--overhead",
        action="store_true",
        help="only the host cost of each op: forward + backward on tiny tensors, fused and eager, in µs "
        "and as a multiple of the floor (x.sum().backward() on the same tensors), timed in one run",
    )
    parser.add_argument(
        "--cold", action="store_true", help="flush the caches before every call (one call per sample)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument(
        "--batch", type=int, help="batch of the training-step benchmarks (default 64, quick 8)"
    )
    parser.add_argument(
        "--methods", help="comma-separated methods for the step benchmarks (default: all that distil)"
    )
    parser.add_argument(
        "--step-compile",
        metavar="MODES",
        help="compile modes of the step benchmarks, each timed with reference and fused ops beside the "
        f"eager steps: comma-separated from {', '.join(STEP_MODES)}, or none (default: default; none "
        "with --quick or --no-compile)",
    )
    return parser


def _step_modes(args: argparse.Namespace) -> list[str]:
    """The compile modes of the step rows (see --step-compile)."""
    if args.step_compile is None:
        return [] if args.quick or args.no_compile else ["default"]
    if args.step_compile.strip() == "none":
        return []
    return _choose("step-compile", args.step_compile, list(STEP_MODES))


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _choose(option: str, text: str, choices: Sequence[str]) -> list[str]:
    picked = _split(text)
    if picked == ["all"]:
        return list(choices)
    unknown = [p for p in picked if p not in choices]
    if unknown or not picked:
        raise UserError(f"--{option} {text!r}: expected a comma-separated list from {', '.join(choices)}")
    return picked


def _devices(text: str) -> list[torch.device]:
    if text == "all":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    found = []
    for name in _choose("device", text, ["cpu", "cuda"]):
        if name == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
        found.append(torch.device(name))
    return found


def machine_info(devices: Sequence[torch.device]) -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if any(d.type == "cuda" for d in devices):
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    for device in devices:
        info[f"fused_backends_{device.type}"] = fused_backends(device)[0]
    return info


def _plans(args: argparse.Namespace) -> tuple[Plan, Plan]:
    quick = args.quick
    ops = Plan(
        warmup=args.warmup if args.warmup is not None else (2 if quick else 3),
        repeat=args.repeat if args.repeat is not None else (10 if quick else 20),
        min_repeat=3 if quick else 5,
        max_seconds=args.max_seconds if args.max_seconds is not None else (2.0 if quick else 10.0),
        cold=args.cold,
    )
    step = step_plan(quick)
    steps = dataclasses.replace(
        step,
        warmup=args.warmup if args.warmup is not None else step.warmup,
        repeat=args.repeat if args.repeat is not None else step.repeat,
        max_seconds=args.max_seconds if args.max_seconds is not None else step.max_seconds,
    )
    return ops, steps


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _check_options(args: argparse.Namespace) -> tuple[list[str], list[str], list[torch.device], list[str]]:
    """(op families, dtype names, devices, step methods) from the options; UserError when one is wrong,
    before anything is measured."""
    families = _choose("ops", args.ops, [*FAMILIES, STEPS])
    dtype_names = _choose("dtype", args.dtype, list(DTYPES))
    devices = _devices(args.device)
    methods: list[str] = []
    if args.methods:
        from tskd_fast.distillers import methods as registered

        methods = _choose("methods", args.methods, list(registered()))
    if args.plot:
        try:
            report.check_plot_path(args.plot)
        except report.PlotUnavailable as error:
            raise UserError(str(error)) from None
    for option in ("repeat", "warmup", "threads", "batch"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise UserError(f"--{option} must be >= 1, got {value}")
    if args.max_seconds is not None and not args.max_seconds >= 0:
        raise UserError(f"--max-seconds must be >= 0, got {args.max_seconds}")
    _step_modes(args)
    return families, dtype_names, devices, methods


def _op_rows(
    device: torch.device, op_names: list[str], dtype_names: list[str], args: argparse.Namespace, machine: dict
) -> tuple[list[Result], list[str]]:
    """Every case of the available families on one device, and the copy bandwidth into `machine`."""
    notes = []
    backends, why = fused_backends(device)
    if not backends:
        notes.append(f"{device.type}: no fused kernels ({why}); only the baselines are timed")
    buffer = (1 << 30 if device.type == "cuda" else 256 << 20) >> (1 if args.quick else 0)
    bandwidth = [copy_bandwidth(device, buffer)]
    plan = _plans(args)[0]
    rows: list[Result] = []
    for name in op_names:
        family = FAMILIES[name]
        for shape in family.shapes_for(args.quick, device):
            for dtype_name in shape.dtypes(dtype_names):
                start = time.perf_counter()
                case_rows, case_notes = run_case(
                    family,
                    shape,
                    device,
                    DTYPES[dtype_name],
                    plan,
                    buffer,
                    compile_baseline=not args.no_compile,
                    with_memory=not args.no_memory,
                )
                notes.extend(case_notes)
                rows.extend(case_rows)
                _say(
                    f"  {name} {shape.label} {dtype_name} {device.type}: {time.perf_counter() - start:.1f} s"
                )
    # Measured before and after the ops; the better of the two is what the machine can do. Each
    # row's share is over the copy timed in its own case's rounds (run_case).
    bandwidth.append(copy_bandwidth(device, buffer))
    best = max(b.gbps for b in bandwidth)
    machine[f"copy_gbps_{device.type}"] = round(best, 2)
    machine[f"copy_gbps_{device.type}_runs"] = [round(b.gbps, 2) for b in bandwidth]
    return rows, notes


def _step_rows(
    devices: list[torch.device], methods: list[str], args: argparse.Namespace
) -> tuple[list[StepResult], list[str]]:
    """One training step of each method on each device; a method that cannot step is a note."""
    rows, notes = [], []
    batch = args.batch or (8 if args.quick else 64)
    plan = _plans(args)[1]
    modes = _step_modes(args)
    for device in devices:
        for method in methods:
            start = time.perf_counter()
            try:
                rows.extend(run_method(method, device, batch, plan, not args.no_memory, modes))
            except Exception as error:  # noqa: BLE001  (one line per method that cannot step)
                first = (str(error).strip().splitlines() or [""])[0]
                notes.append(f"step {method} {device.type}: failed: {type(error).__name__}: {first}"[:300])
            _say(f"  step {method} {device.type}: {time.perf_counter() - start:.1f} s")
    return rows, notes


def _overhead_plan(args: argparse.Namespace) -> Plan:
    # Many short samples rather than a few long ones: a burst of another process's work then
    # lands on a few samples of each implementation alike, and the medians hold.
    return Plan(
        warmup=args.warmup if args.warmup is not None else 20,
        repeat=args.repeat if args.repeat is not None else (100 if args.quick else 300),
        min_repeat=5,
        max_seconds=args.max_seconds if args.max_seconds is not None else (3.0 if args.quick else 8.0),
        min_sample_ms=1.0,
        thread_time=True,
    )


def run_overhead_bench(args: argparse.Namespace, families: list[str], devices: list[torch.device]) -> int:
    """`--overhead`: the host cost table of every chosen op family."""
    from tskd_fast.bench import overhead

    torch.set_num_threads(args.threads or 1)
    machine = machine_info(devices)
    _say(f"overhead on {machine['cpu']} ({machine['threads']} threads), torch {machine['torch']}")
    rows = overhead.run_overhead(devices, [f for f in families if f != STEPS], _overhead_plan(args))
    where = f"{machine['cpu']}, {machine['cores']} cores, {machine['threads']} thread(s), torch {machine['torch']}"
    if "gpu" in machine:
        where += f"; {machine['gpu']}, CUDA {machine['cuda']}"
    print(f"Machine: {where}; {machine['date']}")
    print(
        "\nHost cost of one forward + backward on tiny tensors (µs, 20th percentile of alternating samples; "
        "CPU: the calling thread's CPU time, CUDA: CUDA events; floor = x.sum().backward() on the same "
        "tensors: every input that takes a gradient, in one backward; "
        f"target: fused ≤ {overhead.TARGET_VS_FLOOR}x floor and below eager)\n"
    )
    print(overhead.overhead_table(rows))
    sys.stdout.flush()
    if args.json:
        report.write_overhead_json(args.json, machine, overhead.overhead_json(rows))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """The whole bench; returns the exit code (1 when an implementation failed to run)."""
    families, dtype_names, devices, methods = _check_options(args)
    if args.overhead:
        return run_overhead_bench(args, families, devices)
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    machine = machine_info(devices)
    backends = "; ".join(
        f"{d.type}: {', '.join(machine[f'fused_backends_{d.type}']) or 'none'}" for d in devices
    )
    _say(
        f"bench on {machine['cpu']} ({machine['threads']} threads), torch {machine['torch']}; fused backends {backends}"
    )

    # Notes on what is missing from the build are not failures; the others (an implementation or a
    # step that raised) are.
    op_names = [f for f in families if f != STEPS]
    notes = [
        f"{name}: not available in this build (tskd_fast.functional.{FAMILIES[name].functional} is missing)"
        for name in op_names
        if not FAMILIES[name].available()
    ]
    op_names = [name for name in op_names if FAMILIES[name].available()]
    rows: list[Result] = []
    failures: list[str] = []
    for device in devices if op_names else []:
        device_rows, device_notes = _op_rows(device, op_names, dtype_names, args, machine)
        rows.extend(device_rows)
        failures.extend(n for n in device_notes if "no fused kernels" not in n)
        notes.extend(device_notes)
    step_rows: list[StepResult] = []
    if STEPS in families:
        step_rows, step_notes = _step_rows(devices, methods or distilling_methods(), args)
        failures.extend(step_notes)
        notes.extend(step_notes)

    _print_results(machine, rows, step_rows, notes)
    if args.csv:
        report.write_csv(args.csv, rows, step_rows)
    if args.json:
        report.write_json(args.json, machine, rows, step_rows, notes)
    if args.plot:
        report.write_plot(args.plot, rows, f"tskd_fast fused ops: speed-up, {machine['date']}")
    _say(f"bench finished in {time.perf_counter() - began:.0f} s")
    return 1 if failures else 0


def _print_results(machine: dict, rows: list[Result], step_rows: list[StepResult], notes: list[str]) -> None:
    where = f"{machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}"
    if "gpu" in machine:
        where += f"; {machine['gpu']}, CUDA {machine['cuda']}"
    copies = ", ".join(
        f"{k.removeprefix('copy_gbps_')} {v:.1f} GB/s"
        for k, v in machine.items()
        if k.startswith("copy_gbps_") and not k.endswith("_runs")
    )
    print(f"Machine: {where}; {machine['date']}")
    if copies:
        print(
            f"Copy bandwidth (read + write, best of one copy before and one after the ops): {copies}; "
            "each op row's % copy BW is over the copy timed in its own case's rounds (copy GB/s)"
        )
    if rows:
        print("\nFused ops, forward + backward (speed-up = baseline time / this time)\n")
        print(report.op_table(rows))
        slower = report.slower_than_a_baseline(rows)
        print("\nFused path slower than a baseline: " + ("; ".join(slower) if slower else "nowhere"))
        flop_rows = report.tflops_lines(rows, machine.get("gpu"))
        if flop_rows:
            print("\nMatmul-bound ops (each family's FLOP model, benchmarks/README.md):")
            print("\n".join(f"  {line}" for line in flop_rows))
        targets = report.target_lines(rows, FAMILIES)
        if targets:
            print(
                "\nTargets of the op issues (fused CPU kernel, float32; copy BW = share of the copy bandwidth):"
            )
            print("\n".join(f"  {line}" for line in targets))
    if step_rows:
        print(
            "\nTraining step resnet32x4 -> resnet8x4, 3x32x32, backend reference vs auto, eager and "
            "compiled (mode: trainer.compile; distillation share = (step - student alone - teacher "
            "forward) / step; compile s: the compiled auto step's first call)\n"
        )
        print(report.step_table(step_rows))
    for note in notes:
        print(f"note: {note}")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None, prog: str = "tskd-fast bench") -> int:
    """Entry point of ``python -m tskd_fast.bench``; returns the exit code (2: bad options)."""
    from tskd_fast.train import guarded

    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    return guarded(run_bench, args)
