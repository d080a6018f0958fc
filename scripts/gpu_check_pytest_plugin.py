"""pytest plugin of scripts/gpu_check.sh: a time budget and results that survive a killed run.

Loaded with `-p gpu_check_pytest_plugin` (scripts/ on PYTHONPATH). Environment:
  GPU_CHECK_DEADLINE   epoch seconds; past it, pytest stops after the running test, cleanly, so
                       that --junitxml is still written and the summary still counts what ran
  GPU_CHECK_RESULTS    a JSON-lines file that gets one line per test outcome as it happens, for
                       a run killed before pytest could write its JUnit report
"""

from __future__ import annotations

import json
import os
import time


def _deadline() -> float | None:
    value = os.environ.get("GPU_CHECK_DEADLINE")
    return float(value) if value else None


def pytest_runtest_logreport(report) -> None:
    path = os.environ.get("GPU_CHECK_RESULTS")
    # One line per test: the call phase, or a setup/teardown that did not pass (errors, skips).
    if not path or (report.when != "call" and report.passed):
        return
    if report.when == "call":
        outcome = report.outcome
    else:
        outcome = "skipped" if report.skipped else "error"
    message = ""
    if report.failed and report.longrepr:
        crash = getattr(report.longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(report.longrepr)
        message = (text.strip().splitlines() or [""])[0][:300]
    with open(path, "a") as f:
        f.write(json.dumps({"nodeid": report.nodeid, "outcome": outcome, "message": message}) + "\n")


def pytest_runtest_teardown(item, nextitem) -> None:
    deadline = _deadline()
    if deadline is not None and nextitem is not None and time.time() > deadline:
        item.session.shouldstop = "gpu-check: the test phase's time budget is spent"
