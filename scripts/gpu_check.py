"""Helpers of scripts/gpu_check.sh: what the machine has, and the summary at the end.

    python3 scripts/gpu_check.py probe OUT_DIR     # writes OUT_DIR/probe.json, prints shell lines
    python3 scripts/gpu_check.py summary OUT_DIR   # prints (and writes OUT_DIR/summary.txt) the summary

The summary counts the tests passed, failed and skipped per backend from pytest's JUnit report
(the backend is the first of cpu/cuda/triton/reference among a test's parameter ids; "other" for
tests without one), lists each timed op with its share of the copy bandwidth, and each op's host
cost against the floor of autograd. Its exit code is 0 only when the build, the tests and both
benchmarks all went through without a failure.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

BACKENDS = ("cuda", "triton", "cpu", "reference")
OUTCOMES = ("passed", "failed", "error", "skipped")


# ---------------------------------------------------------------------------------------------
# probe


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def probe(out_dir: Path) -> int:
    """Write probe.json; print shell assignments (GPU=0/1, ARCH=X.Y, ...) for gpu_check.sh."""
    info: dict[str, object] = {"python": sys.version.split()[0], "executable": sys.executable}
    try:
        import torch
    except Exception as error:  # a broken install is reported, not raised
        info["error"] = f"torch cannot be imported: {error}"
        torch = None
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["gpu"] = bool(torch.cuda.is_available()) and torch.cuda.device_count() > 0
        if info["gpu"]:
            major, minor = torch.cuda.get_device_capability(0)
            props = torch.cuda.get_device_properties(0)
            info.update(
                arch=f"{major}.{minor}",
                gpu_name=props.name,
                gpu_memory_gib=round(props.total_memory / 2**30, 1),
                gpu_count=torch.cuda.device_count(),
            )
    for module in ("triton", "pytest", "pytest_benchmark", "ninja", "torchvision"):
        info[f"has_{module}"] = _has(module)
    # Versions from the installed metadata: importing triton takes seconds, and the no-GPU answer
    # is meant to come within seconds.
    for module in ("triton", "setuptools"):
        try:
            info[module] = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            info[module] = "missing"
    info["nvcc"] = shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else ""
    )
    info["ninja_binary"] = shutil.which("ninja") or ""
    info["cpus"] = os.cpu_count()
    (out_dir / "probe.json").write_text(json.dumps(info, indent=2) + "\n")
    shell = {
        "GPU": int(bool(info.get("gpu"))),
        "ARCH": info.get("arch", ""),
        "HAS_PYTEST": int(bool(info["has_pytest"])),
        "HAS_PYTEST_BENCHMARK": int(bool(info["has_pytest_benchmark"])),
        "TORCH_DESC": f"torch {info.get('torch', '(missing)')}, CUDA {info.get('torch_cuda')}",
        "PROBE_ERROR": info.get("error", ""),
    }
    for key, value in shell.items():
        print(f"{key}={shlex.quote(str(value))}")
    return 0


# ---------------------------------------------------------------------------------------------
# summary


def backend_of(test_name: str) -> str:
    """The backend a test ran: the first backend name among its parameter ids, else "other"."""
    match = re.search(r"\[(.*)\]$", test_name)
    if match:
        for token in re.split(r"[-_,\s]+", match.group(1)):
            if token in BACKENDS:
                return token
    return "other"


def _junit_results(path: Path) -> list[tuple[str, str, str]]:
    """(test id, outcome, message) of every test case of a JUnit report."""
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "").strip()
                break
        results.append((name, outcome, message))
    return results


def _streamed_results(path: Path) -> list[tuple[str, str, str]]:
    results = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        results[record["nodeid"]] = (record["nodeid"], record["outcome"], record["message"])
    return list(results.values())


def test_results(out_dir: Path) -> tuple[list[tuple[str, str, str]], str]:
    """The test outcomes and where they came from (the JUnit report, else the streamed lines)."""
    junit = out_dir / "junit.xml"
    if junit.exists():
        try:
            return _junit_results(junit), "JUnit report"
        except ET.ParseError:
            pass
    streamed = out_dir / "test-results.jsonl"
    if streamed.exists():
        return _streamed_results(streamed), "streamed results (pytest wrote no JUnit report)"
    return [], ""


def _phases(out_dir: Path) -> dict[str, tuple[str, str, str]]:
    phases = {}
    path = out_dir / "phases.tsv"
    if path.exists():
        for line in path.read_text().splitlines():
            name, status, seconds, detail = (line.split("\t") + ["", "", ""])[:4]
            phases[name] = (status, seconds, detail)
    return phases


def _tests_section(out_dir: Path, lines: list[str]) -> bool:
    results, source = test_results(out_dir)
    if not results:
        lines.append("  no test results (see tests.log)")
        return False
    counts: dict[str, Counter] = defaultdict(Counter)
    for name, outcome, _ in results:
        counts[backend_of(name)][outcome] += 1
    lines.append(f"  {'backend':<10} {'passed':>7} {'failed':>7} {'errors':>7} {'skipped':>8}   ({source})")
    total: Counter = Counter()
    for backend in (*BACKENDS, "other"):
        if backend in counts:
            c = counts[backend]
            total.update(c)
            lines.append(
                f"  {backend:<10} {c['passed']:>7} {c['failed']:>7} {c['error']:>7} {c['skipped']:>8}"
            )
    lines.append(
        f"  {'total':<10} {total['passed']:>7} {total['failed']:>7} {total['error']:>7} {total['skipped']:>8}"
    )
    graphs = Counter(outcome for name, outcome, _ in results if "test_cuda_graphs" in name)
    if graphs:
        lines.append(
            f"  CUDA-graph capture and host-sync checks (tests/test_cuda_graphs.py): {graphs['passed']} passed, "
            f"{graphs['failed'] + graphs['error']} failed, {graphs['skipped']} skipped"
        )
    bad = [(name, message) for name, outcome, message in results if outcome in ("failed", "error")]
    if bad:
        lines.append(f"  first failures ({min(len(bad), 12)} of {len(bad)}):")
        for name, message in bad[:12]:
            first = message.splitlines()[0][:150] if message else ""
            lines.append(f"    {name}: {first}")
        poisoned = [name for name, message in bad if "device-side assert" in message]
        if poisoned:
            lines.append(
                f"  a device-side assert lost the CUDA context at {poisoned[0]}: later CUDA failures "
                f"may only follow from it"
            )
    return not bad


def _bench_section(out_dir: Path, lines: list[str]) -> bool:
    """The op rows of `python3 -m tskd_fast.bench --json bench.json`: each fused backend's median
    time, GB/s on the op's minimal-bytes model, share of the copy bandwidth measured in the same
    run, and speed-ups over eager and torch.compile; then the whole training steps."""
    path = out_dir / "bench.json"
    if not path.exists():
        log = out_dir / "bench.log"
        if log.exists() and log.stat().st_size:
            lines.append("  no bench.json; the bench command's last lines:")
            lines += ["  " + line for line in log.read_text().splitlines()[-40:]]
        else:
            lines.append("  no timings (see bench.log)")
        return False
    bench = json.loads(path.read_text())
    machine = bench.get("machine", {})
    for key, value in machine.items():
        if key.startswith("copy_gbps_") and not key.endswith("_runs"):
            lines.append(
                f"  {key[len('copy_gbps_') :]}: copy {value:.0f} GB/s (read + write), measured in this run; "
                "'of copy' is over the copy timed in each case's own rounds"
            )
    lines.append(
        f"  {'op':<14} {'shape':<18} {'dtype':<9} {'device':<6} {'backend':<8} {'ms':>9} {'GB/s':>8} "
        f"{'of copy':>8} {'vs eager':>9} {'vs compile':>10}"
    )
    rows = [row for row in bench.get("ops", []) if row.get("kind") == "fused"]
    for row in rows:
        share = f"{100 * row['bw_share']:.0f}%" if row.get("bw_share") is not None else ""
        eager = f"{row['speedup_eager']:.2f}x" if row.get("speedup_eager") else ""
        compiled = f"{row['speedup_compile']:.2f}x" if row.get("speedup_compile") else ""
        lines.append(
            f"  {row['op']:<14} {row['shape']:<18} {row['dtype']:<9} {row['device']:<6} {row['backend']:<8} "
            f"{row['median_ms']:>9.3f} {row['gbps']:>8.1f} {share:>8} {eager:>9} {compiled:>10}"
        )
    flop_rows = [row for row in bench.get("ops", []) if row.get("tflops")]
    if flop_rows:
        from tskd_fast.bench.report import bf16_peak_tflops

        peak = bf16_peak_tflops(machine.get("gpu"))
        lines.append("  matmul-bound ops (FLOP model of benchmarks/README.md), every implementation:")
        for row in flop_rows:
            share = (
                f", {100 * row['tflops'] / peak:.0f}% of bf16 peak"
                if peak and row["dtype"] == "bfloat16"
                else ""
            )
            memory = (
                f", incremental peak {row['peak_mib']:.0f} MiB" if row.get("peak_mib") is not None else ""
            )
            lines.append(
                f"    {row['op']} {row['shape']} {row['dtype']} {row['backend']}: {row['median_ms']:.1f} ms, "
                f"{row['tflops']:.3g} TFLOPS{share}{memory}"
            )
    lines += _step_lines(bench.get("steps", []))
    lines += ["  note: " + note for note in bench.get("notes", [])]
    if not rows:
        lines.append("  no fused rows in bench.json")
    return bool(rows)


def _step_lines(steps: list[dict]) -> list[str]:
    """One line per training-step row: method, device, mode (eager or the compile mode), batch,
    the reference and fused steps' medians, the ratio (and the median of the rounds' ratios), the
    compiled step's first call and the graph breaks torch.compile counted in the reference / fused
    step."""
    lines = []
    for step in steps:
        compiled = f", compiled in {step['compile_s']:.0f} s" if step.get("compile_s") is not None else ""
        paired = f", paired {step['paired_speedup']:.2f}x" if step.get("paired_speedup") is not None else ""
        if step.get("graph_breaks_auto") is not None:
            compiled += f", graph breaks {step['graph_breaks_reference']} / {step['graph_breaks_auto']}"
        lines.append(
            f"  step {step['method']:<9} {step['device']} {step.get('mode', 'eager'):<15} batch {step['batch']:<3}: "
            f"reference {step['reference_ms']:.1f} ms, auto {step['auto_ms']:.1f} ms ({step['speedup']:.2f}x{paired})"
            f"{compiled}"
        )
    return lines


def _steps_section(out_dir: Path, lines: list[str]) -> bool:
    """The steps-<method>.json of phase 4 (whole training steps, eager and compiled)."""
    paths = sorted(out_dir.glob("steps-*.json"))
    if not paths:
        lines.append("  no step timings (see steps-*.log)")
        return False
    ok = True
    for path in paths:
        bench = json.loads(path.read_text())
        if not bench.get("steps"):
            ok = False
        lines += _step_lines(bench.get("steps", []))
        lines += ["  note: " + note for note in bench.get("notes", [])]
    return ok


def _overhead_section(out_dir: Path, lines: list[str]) -> bool:
    """The rows of `python3 -m tskd_fast.bench --overhead --json overhead.json`: each op's host cost
    of one forward + backward on tiny tensors, fused and eager, in µs and against the floor."""
    path = out_dir / "overhead.json"
    if not path.exists():
        log = out_dir / "overhead.log"
        lines.append("  no overhead.json" + ("; see overhead.log" if log.exists() else ""))
        return False
    rows = json.loads(path.read_text()).get("overhead", [])
    lines.append(
        f"  {'op':<10} {'device':<6} {'backend':<8} {'floor µs':>9} {'fused µs':>9} {'x floor':>8} "
        f"{'eager µs':>9} {'x floor':>8}  target"
    )
    for row in rows:
        lines.append(
            f"  {row['op']:<10} {row['device']:<6} {row['backend']:<8} {row['floor_us']:>9.1f} "
            f"{row['fused_us']:>9.1f} {row['fused_vs_floor']:>7.2f}x {row['eager_us']:>9.1f} "
            f"{row['eager_vs_floor']:>7.2f}x  {'met' if row['met'] else 'MISSED'}"
        )
    if not rows:
        lines.append("  no rows in overhead.json")
    return bool(rows)


def summary(out_dir: Path) -> int:
    phases = _phases(out_dir)
    probe_info = {}
    if (out_dir / "probe.json").exists():
        probe_info = json.loads((out_dir / "probe.json").read_text())
    lines = ["", "=" * 30 + " tskd_fast gpu-check summary " + "=" * 30]
    lines.append(
        f"machine: {probe_info.get('gpu_name', 'no GPU')} (sm {probe_info.get('arch', '-')}), "
        f"{probe_info.get('cpus')} CPUs, python {probe_info.get('python')}, torch {probe_info.get('torch')} "
        f"(CUDA {probe_info.get('torch_cuda')}), triton {probe_info.get('triton', 'missing')}"
    )
    ok = True
    lines.append("phases:")
    for name, (status, seconds, detail) in phases.items():
        lines.append(f"  {name:<12} {status:<8} {seconds:>5} s  {detail}")
        ok = ok and status in ("ok", "skipped")
    lines.append("tests:")
    if not probe_info.get("has_pytest", True):
        lines.append("  pytest is NOT installed for this python: the test-suite did not run")
        ok = False
    else:
        ok = _tests_section(out_dir, lines) and ok
    lines.append("timings (forward + backward, median):")
    ok = _bench_section(out_dir, lines) and ok
    if any(name.startswith("steps-") for name in phases):
        lines.append("whole training steps (eager and compiled; reference vs fused ops):")
        ok = _steps_section(out_dir, lines) and ok
    lines.append("host cost (forward + backward on tiny tensors, 20th percentile):")
    ok = _overhead_section(out_dir, lines) and ok
    draws = out_dir / "tst-draws.log"
    if "tst-draws" in phases and draws.exists():
        lines.append("tst step, reference / fused ratio with shared and with the same random draws:")
        lines += [f"  {line.strip()}" for line in draws.read_text().splitlines() if "draws" in line]
    lines.append(f"verdict: {'PASS' if ok else 'FAIL'} (logs in {out_dir})")
    text = "\n".join(lines) + "\n"
    (out_dir / "summary.txt").write_text(text)
    print(text, end="")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("probe", "summary"):
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    return probe(out_dir) if argv[0] == "probe" else summary(out_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
