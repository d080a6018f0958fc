"""KD-loss timings for scripts/gpu_check.sh (used until `tskd-fast bench` exists).

    python3 scripts/gpu_kd_bench.py --out bench.json [--device cuda|cpu] [--budget SECONDS]

Forward + backward of the plain KD loss (T = 4, batchmean) and of DTD + KA (flsw temperatures,
probability shift, KL + CE), on the CUDA C++ and Triton kernels against eager PyTorch and
torch.compile of the reference, at the shapes of benchmarks/kd_loss_cases.py (float32) and at
an LLM vocabulary (4096 x 128256, bfloat16). Each time is reported with its bandwidth on the
minimal-bytes model (read student and teacher once, write the gradient once: 3 B C elements)
and as a share of the device-to-device copy bandwidth measured in the same run.
--device cpu is a rehearsal of the script itself on small shapes (no GPU, no CUDA kernels).
--budget: past it, torch.compile columns (whose compilation dominates) are left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from kd_loss_cases import (  # noqa: E402
    SHAPES,
    dtd_ka_fused,
    dtd_ka_reference,
    fused,
    reference_kd,
)

from tskd_fast.ops import resolve_backend  # noqa: E402

LLM_SHAPE = (4096, 128256)
CPU_SHAPES = [(64, 100, torch.float32), (16, 1000, torch.bfloat16)]


def cases(device: str) -> list[tuple[int, int, torch.dtype]]:
    if device == "cpu":
        return CPU_SHAPES
    return [(rows, classes, torch.float32) for rows, classes in SHAPES] + [(*LLM_SHAPE, torch.bfloat16)]


def make_inputs(rows: int, classes: int, device: str, dtype: torch.dtype):
    """Student logits (requiring grad), teacher logits and labels, drawn on the device (the LLM
    shape would take seconds to draw on the host)."""
    gen = torch.Generator(device=device).manual_seed(rows * 100003 + classes)
    student = torch.randn(rows, classes, generator=gen, device=device).mul_(3).to(dtype).requires_grad_(True)
    teacher = torch.randn(rows, classes, generator=gen, device=device).mul_(3).to(dtype)
    target = torch.randint(0, classes, (rows,), generator=gen, device=device)
    return student, teacher, target


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device: str, repeat: int = 7, min_sample_s: float = 0.005) -> float:
    """Median over `repeat` samples of the time of one fn() call, in milliseconds; each sample
    runs fn enough times to last min_sample_s, so that tiny shapes are not timing the sync."""
    fn()
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    one = max(time.perf_counter() - start, 1e-6)
    inner = max(1, min(200, int(min_sample_s / one)))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        samples.append((time.perf_counter() - start) * 1e3 / inner)
    return statistics.median(samples)


def copy_gbps(device: str) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second) of a 1 GiB copy."""
    nbytes = (1 << 30) if device == "cuda" else (64 << 20)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, repeat=9, min_sample_s=0.02)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def implementations(device: str) -> dict[str, dict[str, object]]:
    """loss -> impl -> callable, for the backends that run here; compiled ones built lazily."""
    plain: dict[str, object] = {}
    dtd: dict[str, object] = {}
    probe = torch.device(device)
    for backend in ("cuda", "triton"):
        try:
            resolve_backend(backend, probe)
        except ValueError as error:
            plain[backend] = dtd[backend] = str(error)
            continue
        plain[backend] = fused(backend)
        dtd[backend] = dtd_ka_fused(backend)
    plain["eager"] = reference_kd
    dtd["eager"] = dtd_ka_reference
    plain["compile"] = "compile"
    dtd["compile"] = "compile"
    return {"kd": plain, "dtd_ka": dtd}


def run(device: str, budget_s: float, out: Path) -> dict:
    """Time every case; `out` is rewritten after each row, so that a run killed by its time limit
    still leaves what it measured."""
    started = time.time()
    result: dict[str, object] = {"device": device, "rows": []}
    if device == "cuda":
        result["device_name"] = torch.cuda.get_device_name()
    else:
        result["device_name"] = "cpu (rehearsal)"
    result["copy_gbps"] = copy_gbps(device)
    print(f"copy bandwidth: {result['copy_gbps']:.0f} GB/s", flush=True)
    impls = implementations(device)
    compiled = {"kd": None, "dtd_ka": None}
    for rows, classes, dtype in cases(device):
        student, teacher, target = make_inputs(rows, classes, device, dtype)
        nbytes = 3 * rows * classes * student.element_size()
        for loss_name, table in impls.items():
            for impl, fn in table.items():
                row = {
                    "loss": loss_name,
                    "shape": [rows, classes],
                    "dtype": str(dtype).removeprefix("torch."),
                    "impl": impl,
                    "ms": None,
                }
                if isinstance(fn, str) and fn != "compile":
                    row["note"] = f"unavailable: {fn}"
                    result["rows"].append(row)
                    continue
                if fn == "compile":
                    if time.time() - started > budget_s:
                        row["note"] = "left out: time budget spent"
                        result["rows"].append(row)
                        continue
                    if compiled[loss_name] is None:
                        eager = reference_kd if loss_name == "kd" else dtd_ka_reference
                        compiled[loss_name] = torch.compile(eager)
                    fn = compiled[loss_name]
                args = (student, teacher) if loss_name == "kd" else (student, teacher, target)

                def step(fn=fn, args=args):
                    args[0].grad = None
                    fn(*args).backward()

                try:
                    ms = time_ms(step, device)
                except Exception as error:  # an OOM or a failing kernel is a result, not the end
                    row["note"] = f"error: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
                    row["error"] = True
                else:
                    gbps = nbytes / (ms * 1e-3) / 1e9
                    row.update(ms=ms, gbps=gbps, share=gbps / result["copy_gbps"])
                result["rows"].append(row)
                out.write_text(json.dumps(result, indent=1) + "\n")
                shown = f"{row['ms']:.3f} ms" if row["ms"] is not None else row["note"]
                print(f"{loss_name:<7} {rows}x{classes} {row['dtype']:<9} {impl:<8} {shown}", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds; later compile rows are left out")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_kd_bench: no CUDA GPU visible", file=sys.stderr)
        return 2
    result = run(args.device, args.budget, Path(args.out))
    return 1 if any(row.get("error") for row in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
