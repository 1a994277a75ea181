"""The benchmark harnesses run end to end (tiny durations), so they cannot rot: the HTTP scenarios,
the embedded model, the toolsets, the hardening review's attack replay (bench/attacks.py) and the
connection guard's cost (bench/guard.py). They assert that every target answered and the reports
have their rows (for the attacks, also the two correctness outcomes — no client received a 5xx,
no execution was left running) — never how fast anything was."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str) -> str:
    """``python -m ARGS…`` from the repository's root; its standard output."""
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_bench_quick_run(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    _bench("bench.run", "--quick", "--without-litellm", "--memory", "--output", str(output))
    report = output.read_text()
    for label in (
        "stream, 32 clients, streams/s",
        "stream, 1 client, whole stream p50 (ms)",
        "| bare relay | opentess | LiteLLM |",
        "### Memory (opentess, 1 process)",
    ):
        assert label in report
    streams_row = next(line for line in report.splitlines() if line.startswith("| stream, 32 clients"))
    cells = [c.strip() for c in streams_row.split("|")[1:-1]]
    assert cells[4] == "not installed"  # LiteLLM left out on purpose
    assert float(cells[3].replace(",", "")) > 0  # opentess served streams
    assert "Failed requests during the run" not in report


@pytest.mark.model
def test_bench_model_quick_run() -> None:
    """The embedded-model comparison runs end to end (one tiny round, without llama-server unless
    it was built): every runner has its row, the concurrency check reports its findings."""
    from bench import model

    report = model.report(argparse.Namespace(repeat=1, quick=True, with_llama_server=False))
    assert "| in-process llama-cpp-python |" in report
    assert "| opentess (HTTP, SSE) |" in report
    assert "first tokens in arrival order: yes" in report
    assert "every stream complete: yes" in report


def test_bench_toolsets_quick_run() -> None:
    """The toolsets' benchmark runs end to end: the grounded path against bare fetches, and whole
    runs (grounded, no-tools, agent steps) through a server, each with its row."""
    stdout = _bench("bench.toolsets", "--quick")
    for label in ("| bare httpx:", "| opentess: SearXNG backend", "| internet |", "| agent, 10 steps |"):
        assert label in stdout
    assert "beyond its fetches" in stdout and "An `agent` step costs" in stdout


def _row(report: str, label: str) -> str:
    """The value cell of the summary row that starts with ``label``."""
    match = re.search(rf"^\| {re.escape(label)}[^|]* \| (.*) \|$", report, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{report[:3000]}"
    return match.group(1)


def test_attacks_quick_run() -> None:
    report = _bench("bench.attacks", "--quick")
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
    report = _bench("bench.guard", "--quick")
    assert "| non-stream, 32 connections, req/s |" in report
    assert "| non-stream, 1 connection, mean latency (ms) |" in report
    assert "answered 431 by guarded" in report  # the two servers really run different protocols
