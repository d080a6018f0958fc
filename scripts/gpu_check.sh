#!/usr/bin/env bash
# One-shot check of tskd_fast on a machine with an NVIDIA GPU, within about 8 minutes:
#   1. build the extension in place for this GPU's architecture only (MAX_JOBS = cores);
#   2. run the test-suite (the CUDA and Triton backends on the GPU): first the CUDA-graph capture and
#      host-sync checks (tests/test_cuda_graphs.py), then the backend-parametrised tests, then the rest;
#   3. time every fused op: `python3 -m tskd_fast.bench --device cuda --quick` (CUDA C++ and Triton
#      against eager and torch.compile, the KD loss also at an LLM vocabulary in bf16, GB/s against
#      the copy bandwidth measured in the same run, the fused linear + KD loss at N = 8192,
#      H_s = 2048, H_t = 4096, V = 128256 in bf16 with its TFLOPS as a share of the bf16 peak and
#      its incremental peak memory);
#   4. time each op's host cost: `python3 -m tskd_fast.bench --overhead --device cuda --quick`
#      (forward + backward on tiny tensors, fused and eager against the floor of autograd);
#   5. time every method's whole training step eager, compiled and compiled with CUDA graphs
#      (reduce-overhead), reference and fused ops, one bench run per method (steps-<method>.json);
#   6. profile the tst training step with and without the fused ops, eager and compiled (profile-tst.log),
#      and time it with shared and with the same random draws (tst-draws.log);
#   7. print one summary: tests passed/failed/skipped per backend, the CUDA-graph and sync checks,
#      each op's time and bandwidth share, each op's host cost, each method's step times.
# Uses the system python3 and whatever it has installed (no venv, no network, installs nothing).
#
#   scripts/gpu_check.sh [OUT_DIR]      (or `make gpu-check OUT=...`)
#
# OUT_DIR (default $OUT, else ./gpu-check-out) receives every log, the JUnit report and summary.txt.
# Exit code: 0 when everything passed; 1 when something failed; 2 without a GPU (said within seconds).
# Knobs: PYTHON (python3), GPU_CHECK_BUDGET_S (720: the whole run), GPU_CHECK_TESTS (pytest
# targets, default tests), GPU_CHECK_DEVICE=cpu (a rehearsal of this script without a GPU: no
# build, the installed extension, benchmark on small CPU shapes), GPU_CHECK_STEP_METHODS (the
# methods of step 4, default all that distil), GPU_CHECK_STEP_BATCH (64; 4 on the CPU),
# GPU_CHECK_STEP_COMPILE (default,reduce-overhead; default on the CPU).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT_DIR="${1:-${OUT:-$REPO/gpu-check-out}}"
mkdir -p "$OUT_DIR" && OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PY="${PYTHON:-python3}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-720}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
START=$(date +%s)
LOG="$OUT_DIR/gpu-check.log"
PHASES="$OUT_DIR/phases.tsv"
: > "$LOG"
: > "$PHASES"
rm -f "$OUT_DIR/junit.xml" "$OUT_DIR/test-results.jsonl" "$OUT_DIR/bench.json" "$OUT_DIR/bench.log" \
  "$OUT_DIR/overhead.json" "$OUT_DIR/overhead.log" "$OUT_DIR"/steps-*.json "$OUT_DIR"/steps-*.log
export PYTHONPATH="$REPO:$REPO/scripts${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
if [ "$DEVICE" = "cuda" ]; then unset TRITON_INTERPRET; fi  # Triton compiles for the GPU

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET_S - $(elapsed) )); }
say() { echo "gpu-check [$(elapsed) s] $*" | tee -a "$LOG"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$PHASES"; }

# run_phase NAME LIMIT_S LOGFILE CMD...: CMD with a hard time limit, its outcome in phases.tsv.
run_phase() {
  local name=$1 limit=$2 logfile=$3 t0 rc
  shift 3
  t0=$(date +%s)
  say "$name: $* (limit ${limit} s, log $(basename "$logfile"))"
  timeout --kill-after=10 "$limit" "$@" > "$logfile" 2>&1
  rc=$?
  local took=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    record "$name" timeout "$took" "killed after ${limit} s"
  elif [ "$rc" -eq 0 ]; then
    record "$name" ok "$took" ""
  else
    record "$name" failed "$took" "exit code $rc, see $(basename "$logfile")"
  fi
  say "$name: exit code $rc after ${took} s"
  return "$rc"
}

# --- 0. what this machine has -----------------------------------------------------------------
if ! command -v "$PY" > /dev/null 2>&1; then
  echo "gpu-check: $PY not found; set PYTHON to the python that has torch" | tee -a "$LOG"
  exit 2
fi
PROBE="$(timeout 60 "$PY" "$REPO/scripts/gpu_check.py" probe "$OUT_DIR" 2>> "$LOG")"
eval "$PROBE"
if [ -n "${PROBE_ERROR:-}" ]; then
  echo "gpu-check: no usable torch for $PY ($PROBE_ERROR); nothing to check" | tee -a "$LOG"
  exit 2
fi
if [ "$DEVICE" = "cuda" ] && [ "${GPU:-0}" != "1" ]; then
  echo "gpu-check: no CUDA GPU visible to $PY (${TORCH_DESC:-torch unknown}, torch.cuda.is_available() is False); nothing to check on this machine" | tee -a "$LOG"
  exit 2
fi
say "machine: $(cat "$OUT_DIR/probe.json" | tr -d '\n ' | cut -c1-400)"

# --- 1. build -----------------------------------------------------------------------------------
if [ "$DEVICE" = "cuda" ]; then
  JOBS="$(nproc)"
  # The lent H200 machine puts a g++ wrapper first on PATH (/opt/gcc/bin/g++, which adds -B paths
  # to another runtime); an extension built with it crashed (SIGSEGV) on every C++ exception,
  # so each bad-input check killed the process instead of raising. The system compiler, the one
  # nvcc uses as its host compiler, raises correctly. CC / CXX set by the caller win.
  if [ -z "${CXX:-}" ] && [ -x /usr/bin/g++ ] && [ -x /usr/bin/gcc ]; then
    export CC=/usr/bin/gcc CXX=/usr/bin/g++
    say "compiler: $CXX (set CC / CXX to choose another)"
  fi
  if ! "$PY" -c "import ninja" > /dev/null 2>&1 && ! command -v ninja > /dev/null 2>&1; then
    say "ninja is missing: torch compiles the sources one after another (slower, MAX_JOBS unused)"
  fi
  run_phase build "$(( $(left) - 200 > 120 ? $(left) - 200 : 120 ))" "$OUT_DIR/build.log" \
    env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$JOBS" "$PY" setup.py build_ext --inplace
  "$PY" -c "from tskd_fast.ops import _extension as e; print('CUDA kernels loaded:', e.has_cuda_kernels(), '| arch list:', repr(e.cuda_arch_list()), '|', e.why_unavailable())" 2>&1 | tee -a "$LOG"
else
  record build skipped 0 "rehearsal on the CPU: the installed extension"
fi

# --- 2. tests -----------------------------------------------------------------------------------
BENCH_RESERVE=465
if [ "${HAS_PYTEST:-0}" = "1" ]; then
  # The CUDA-graph and sync checks, then the backend-parametrised test files, so that a short
  # budget still covers the kernels.
  read -r -a TARGETS <<< "${GPU_CHECK_TESTS:-tests}"
  FIRST=()
  if [ -z "${GPU_CHECK_TESTS:-}" ]; then
    mapfile -t FIRST < <(echo tests/test_cuda_graphs.py; grep -l "kernel_backends\|device_of" tests/test_*.py 2> /dev/null | grep -v test_cuda_graphs.py)
  fi
  ARGS=(-q -p no:cacheprovider -o addopts=-ra -p gpu_check_pytest_plugin --junitxml="$OUT_DIR/junit.xml")
  if [ "${HAS_PYTEST_BENCHMARK:-0}" = "1" ]; then ARGS+=(--benchmark-skip); fi
  LIMIT=$(( $(left) - BENCH_RESERVE ))
  if [ "$LIMIT" -lt 30 ]; then LIMIT=30; fi
  # The plugin stops cleanly 20 s before the hard limit (the JUnit report is then still written).
  export GPU_CHECK_DEADLINE=$(( $(date +%s) + LIMIT - 20 ))
  export GPU_CHECK_RESULTS="$OUT_DIR/test-results.jsonl"
  run_phase tests "$LIMIT" "$OUT_DIR/tests.log" "$PY" -m pytest "${ARGS[@]}" "${FIRST[@]}" "${TARGETS[@]}"
  tail -n 3 "$OUT_DIR/tests.log" | tee -a "$LOG"
else
  record tests failed 0 "pytest is not installed for $PY: the test-suite was not run"
  say "pytest is not installed for $PY: the test-suite was not run"
fi

# --- 3. timings of the ops -----------------------------------------------------------------------
OVERHEAD_RESERVE=45
STEPS_RESERVE=300
DRAWS_RESERVE=60
PROFILE_RESERVE=$(( 90 + DRAWS_RESERVE ))
OPS="$("$PY" -c 'from tskd_fast.bench.cases import FAMILIES; print(",".join(FAMILIES))' 2>> "$LOG")"
LIMIT=$(( $(left) - OVERHEAD_RESERVE - STEPS_RESERVE - PROFILE_RESERVE ))
if [ "$LIMIT" -lt 30 ]; then LIMIT=30; fi
run_phase bench "$LIMIT" "$OUT_DIR/bench.log" \
  "$PY" -m tskd_fast.bench --device "$DEVICE" --quick --ops "${OPS:-all}" --json "$OUT_DIR/bench.json"

# --- 4. host cost ---------------------------------------------------------------------------------
LIMIT=$(( $(left) - STEPS_RESERVE - PROFILE_RESERVE ))
if [ "$LIMIT" -lt 30 ]; then LIMIT=30; fi
run_phase overhead "$LIMIT" "$OUT_DIR/overhead.log" \
  "$PY" -m tskd_fast.bench --overhead --device "$DEVICE" --quick --json "$OUT_DIR/overhead.json"

# --- 5. whole training steps, eager and compiled -------------------------------------------------
# One bench run per method (a fresh process, its own JSON), so that a method the budget does not
# reach leaves the others' results; each run compiles the step twice per mode (reference, fused).
if [ "$DEVICE" = "cuda" ]; then STEP_BATCH_DEFAULT=64 STEP_COMPILE_DEFAULT=default,reduce-overhead
else STEP_BATCH_DEFAULT=4 STEP_COMPILE_DEFAULT=default; fi
STEP_METHODS="${GPU_CHECK_STEP_METHODS:-$("$PY" -c 'from tskd_fast.bench.steps import distilling_methods; print(" ".join(distilling_methods()))' 2>> "$LOG")}"
for METHOD in $STEP_METHODS; do
  LIMIT=$(( $(left) - PROFILE_RESERVE ))
  if [ "$LIMIT" -lt 30 ]; then
    record "steps-$METHOD" skipped 0 "no time left"
    continue
  fi
  run_phase "steps-$METHOD" "$LIMIT" "$OUT_DIR/steps-$METHOD.log" \
    "$PY" -m tskd_fast.bench --device "$DEVICE" --ops steps --methods "$METHOD" --repeat 5 \
    --batch "${GPU_CHECK_STEP_BATCH:-$STEP_BATCH_DEFAULT}" \
    --step-compile "${GPU_CHECK_STEP_COMPILE:-$STEP_COMPILE_DEFAULT}" --json "$OUT_DIR/steps-$METHOD.json"
done

# --- 6. profile of the tst step ------------------------------------------------------------------
# The first GPU run timed the tst step 2.8x slower with the fused ops than without, in a bench that
# then let the two steps draw different random augmentations. tst-draws.log repeats that quick
# measurement with shared and with the same draws (benchmarks/tst_draws.py); the profile of both
# steps, eager and compiled (profile-tst.log), says where the time goes.
LIMIT=$(( $(left) - DRAWS_RESERVE - 10 ))
if [ "$LIMIT" -ge 30 ]; then
  run_phase profile-tst "$LIMIT" "$OUT_DIR/profile-tst.log" \
    "$PY" "$REPO/scripts/profile_step.py" tst --device "$DEVICE" --batch 8 --compile default
else
  record profile-tst skipped 0 "no time left"
fi
LIMIT=$(( $(left) - 10 ))
if [ "$LIMIT" -ge 30 ]; then
  run_phase tst-draws "$LIMIT" "$OUT_DIR/tst-draws.log" \
    "$PY" "$REPO/benchmarks/tst_draws.py" --device "$DEVICE" --batch 8 --trials 5 --draws 20
else
  record tst-draws skipped 0 "no time left"
fi

# --- 7. summary ---------------------------------------------------------------------------------
record total ok "$(elapsed)" "budget ${BUDGET_S} s"
"$PY" "$REPO/scripts/gpu_check.py" summary "$OUT_DIR" | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
