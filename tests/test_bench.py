"""The benchmark harness runs end to end (tiny durations), so it cannot rot. It asserts that every
target answered and the report has its rows — never how fast anything was."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_run(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--without-litellm", "--memory", "--output", str(output)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
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
    result = subprocess.run(
        [sys.executable, "-m", "bench.toolsets", "--quick"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for label in ("| bare httpx:", "| opentess: SearXNG backend", "| internet |", "| agent, 10 steps |"):
        assert label in result.stdout
    assert "beyond its fetches" in result.stdout and "An `agent` step costs" in result.stdout
