"""The hardening benchmarks run end to end in their --quick form, so they cannot rot: the attack
replay (bench/attacks.py) and the connection guard's cost (bench/guard.py). They assert that the
reports have their rows and, for the attacks, the two correctness outcomes — no client received a
5xx, no execution was left running — never a duration or a speed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _quick(module: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _row(report: str, label: str) -> str:
    """The value cell of the summary row that starts with ``label``."""
    match = re.search(rf"^\| {re.escape(label)}[^|]* \| (.*) \|$", report, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{report[:3000]}"
    return match.group(1)


def test_attacks_quick_run() -> None:
    report = _quick("bench.attacks")
    for heading in ("## Summary", "## Memory and disk", "## By attack class", "### Connections", "## Every 5xx"):
        assert heading in report
    for cls in ("1 hostile templates", "2 distinct values", "4 token authority", "5/6 conversation growth",
                "7 integers and ids", "8 shapes", "9 routes and smaller items", "abrupt streams"):  # fmt: skip
        assert f"| {cls}" in report, cls
    for kind in ("slow headers", "idle: connect, send nothing", "unfinished header", "slow body"):
        assert f"| {kind}" in report, kind
    assert _row(report, "server errors (5xx)") == "0", report
    assert _row(report, "stuck executions") == "0", report
    assert int(_row(report, "HTTP requests made by the attacks").replace(",", "")) > 0


@pytest.mark.skipif(not any((Path(p) / "wrk").exists() for p in os.get_exec_path()), reason="wrk is not installed")
def test_guard_quick_run() -> None:
    report = _quick("bench.guard")
    assert "| non-stream, 32 connections, req/s |" in report
    assert "| non-stream, 1 connection, mean latency (ms) |" in report
    assert "answered 431 by guarded" in report  # the two servers really run different protocols
