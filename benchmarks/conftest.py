"""pytest-benchmark suites: `pytest benchmarks --benchmark-only` (cases from tskd_fast.bench.cases)."""

from tskd_fast.bench.timing import quiet_compile_workers

# Before anything compiles: no inductor worker pool beside the timed code.
quiet_compile_workers()
