"""scripts/bench: measure opentess against a bare relay and LiteLLM's proxy in one run, on a fast
fake upstream, and print medians and ratios.

    python -m bench.run [--repeat 3] [--duration 5] [--with-litellm] [--workers 1,2]
                        [--with-model] [--memory] [--output bench/RESULTS.md] [--quick]
    python -m bench.run --toolsets [--quick]    (the toolsets' grounded path alone: bench/toolsets.py)
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import load, targets

SCENARIOS = [
    ("nonstream_1conn_mean_ms", "non-stream, 1 connection, mean latency (ms)", "lower"),
    ("nonstream_32conn_rps", "non-stream, 32 connections, req/s", "higher"),
    ("stream_32_streams_per_s", "stream, 32 clients, streams/s", "higher"),
    ("stream_1_p50_ms", "stream, 1 client, whole stream p50 (ms)", "lower"),
]


@dataclass
class Column:
    name: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0

    def median(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None


def measure(target: load.Target, duration: float, repeat: int, column: Column, with_wrk: bool) -> None:
    for _ in range(repeat):
        if with_wrk:
            one = load.wrk(target, 1, duration)
            column.samples.setdefault("nonstream_1conn_mean_ms", []).append(one.mean_ms)
            many = load.wrk(target, 32, duration)
            column.samples.setdefault("nonstream_32conn_rps", []).append(many.rps)
            column.errors += one.errors + many.errors
        s32 = load.streams(target, 32, duration)
        column.samples.setdefault("stream_32_streams_per_s", []).append(s32.streams_per_s)
        s1 = load.streams(target, 1, duration)
        column.samples.setdefault("stream_1_p50_ms", []).append(s1.p50_ms)
        column.errors += s32.errors + s1.errors


def fmt(value: float | None) -> str:
    if value is None:
        return "not installed"
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or a != a or b != b:
        return "—"
    return f"{a / b:.2f}×"


def table(columns: list[Column], workers: int) -> str:
    by = {c.name: c for c in columns}
    header = "| scenario | direct | bare relay | opentess | LiteLLM | opentess / relay | opentess / LiteLLM |"
    lines = [f"### {workers} worker process{'es' if workers > 1 else ''}", "", header, "|---" * 7 + "|"]
    for key, label, _better in SCENARIOS:
        values = {
            name: (by[name].median(key) if name in by else None) for name in ("direct", "relay", "opentess", "litellm")
        }
        o, r, ll = values["opentess"], values["relay"], values["litellm"]
        if key == "nonstream_1conn_mean_ms" and o is not None and values["direct"] is not None:
            label += f" — opentess adds {o - values['direct']:.2f} ms over direct"
        lines.append(
            f"| {label} | {fmt(values['direct'])} | {fmt(r)} | {fmt(o)} | {fmt(ll)} | {ratio(o, r)} | {ratio(o, ll)} |"
        )
    base = by.get("baseline")
    if base is not None:
        lines += ["", f"Against the baseline source tree ({BASELINE_NAME}), measured in the same run:", "",
                  "| scenario | baseline | opentess | opentess / baseline |", "|---|---|---|---|"]  # fmt: skip
        for key, label, _better in SCENARIOS:
            b, o = base.median(key), by["opentess"].median(key) if "opentess" in by else None
            lines.append(f"| {label} | {fmt(b)} | {fmt(o)} | {ratio(o, b)} |")
    errors = {c.name: c.errors for c in columns if c.errors}
    if errors:
        lines += ["", f"Failed requests during the run: {errors}"]
    lines.append("")
    lines.append("Ratios are opentess divided by the other column: above 1× is better for req/s and streams/s, "
                 "below 1× is better for latencies.")  # fmt: skip
    return "\n".join(lines)


def run_http(args: argparse.Namespace) -> str:
    sections = []
    with_wrk = load.have_wrk()
    with targets.fake_upstream() as (upstream, _):
        for workers in args.workers:
            columns: list[Column] = []
            plan: list[tuple[str, Callable[[], Any] | None]] = [
                ("direct", None),
                ("relay", lambda: targets.relay(upstream)),
                ("opentess", functools.partial(targets.opentess, upstream, workers, args.database_url)),
            ]
            if args.baseline_src:
                plan.append(
                    (
                        "baseline",
                        functools.partial(targets.opentess, upstream, workers, args.database_url, args.baseline_src),
                    )
                )
            if targets.litellm_installed() and not args.without_litellm:
                plan.append(("litellm", functools.partial(targets.litellm, upstream, workers)))
            for name, factory in plan:
                if workers > 1 and name in ("direct", "relay"):
                    continue  # the baselines are single-process by nature; measured once below
                column = Column(name)
                if factory is None:
                    target = targets.direct_target(upstream)
                    measure(target, args.duration, args.repeat, column, with_wrk)
                else:
                    with ExitStack() as stack:
                        target, _pid = stack.enter_context(factory())
                        if failed := load.requests(target, 200):  # warm up pools and caches
                            raise RuntimeError(f"{name}: {failed} of 200 warm-up requests failed")
                        measure(target, args.duration, args.repeat, column, with_wrk)
                print(f"  measured {name} ({workers} worker(s))", file=sys.stderr)
                columns.append(column)
            if workers > 1:
                columns += [c for c in sections_columns.get(1, []) if c.name in ("direct", "relay")]
            sections_columns[workers] = columns
            sections.append(table(columns, workers))
    if not with_wrk:
        sections.insert(0, "wrk is not installed: the non-streaming scenarios were skipped (apt-get install wrk).")
    return "\n\n".join(sections)


sections_columns: dict[int, list[Column]] = {}
BASELINE_NAME = ""


def _describe(tree: Path) -> str:
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return f"commit {commit}" if commit else str(tree)


def run_memory(args: argparse.Namespace) -> str:
    """RSS of opentess after 5,000 and 10,000 requests (half streaming)."""
    with targets.fake_upstream() as (upstream, _), targets.opentess(upstream, 1, args.database_url) as (target, pid):
        total = args.memory_requests
        half = total // 2
        load.requests(target, 500)
        before = targets.rss_kib(pid)
        failures = load.requests(target, half // 2) + load.requests(target, half - half // 2, stream=True)
        at_half = targets.rss_kib(pid)
        failures += load.requests(target, half // 2) + load.requests(target, half - half // 2, stream=True)
        at_end = targets.rss_kib(pid)
    growth = (at_end - at_half) / at_half * 100
    return "\n".join(
        [
            "### Memory (opentess, 1 process)",
            "",
            "| after | RSS |",
            "|---|---|",
            f"| 500 warm-up requests | {before / 1024:.1f} MiB |",
            f"| {half:,} requests | {at_half / 1024:.1f} MiB |",
            f"| {total:,} requests | {at_end / 1024:.1f} MiB |",
            "",
            f"Growth between {half:,} and {total:,} requests: {growth:+.1f}% (target: within ±5%). "
            f"Failed requests: {failures}.",
        ]
    )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs of every scenario; medians are reported")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per scenario run")
    parser.add_argument("--workers", default="1", help="comma-separated worker counts, e.g. 1,2")
    parser.add_argument("--database-url", default=None, help="opentess database (default: embedded SQLite)")
    parser.add_argument("--with-litellm", action="store_true", help=f"install LiteLLM {targets.LITELLM_VERSION}")
    parser.add_argument("--without-litellm", action="store_true", help="skip LiteLLM even when it is installed")
    parser.add_argument("--with-model", action="store_true", help="also measure the embedded SmolLM2 model")
    parser.add_argument("--with-llama-server", action="store_true", help="build llama-server to compare (slow)")
    parser.add_argument("--memory", action="store_true", help="RSS after 5,000 and 10,000 requests")
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="tiny durations: checks the harness, not speed")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also measure the opentess of this source tree (e.g. `git worktree add /tmp/base <commit>`)",
    )
    parser.add_argument(
        "--toolsets", action="store_true", help="only the toolsets' grounded path (search + pages) against bare httpx"
    )
    parser.add_argument(
        "--files", action="store_true", help="only the files scenarios: ingestion, retrieval, route, upload RSS"
    )
    parser.add_argument("--output", help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.baseline_src:
        global BASELINE_NAME
        BASELINE_NAME = _describe(args.baseline_src)
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.quick:
        args.repeat, args.duration, args.memory_requests = 1, 1.0, 200
    if args.with_litellm:
        targets.install_litellm()
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    title = f"# opentess benchmark — {started_at}, commit {commit or 'unknown'}"
    if args.toolsets:  # alone: it shares nothing with the HTTP scenarios, which take minutes
        from bench import toolsets

        parts = [title, "", f"Machine: {machine()}. The fakes, the server and the measured clients share these cores.",
                 "", toolsets.report(args), "", toolsets.report_runs(args)]  # fmt: skip
    elif args.files:  # alone too (bench/files.py): it measures against baselines of its own
        from bench import files

        database = "PostgreSQL and SQLite" if args.database_url else "SQLite (embedded default)"
        parts = [title, "", f"Machine: {machine()}. The fakes, the servers and the load share these cores; "
                 f"medians of {args.repeat} run(s) of {args.duration:g} s; database: {database}.", "",
                 files.report(args)]  # fmt: skip
    else:
        parts = [
            title,
            "",
            f"Machine: {machine()}. Load generator, fake upstream and servers share these cores.",
            f"Medians of {args.repeat} run(s) of {args.duration:g} s per scenario; database: "
            f"{'PostgreSQL' if args.database_url else 'SQLite (embedded default)'}.",
            "",
            run_http(args),
        ]
    if args.memory and not args.toolsets:
        parts += ["", run_memory(args)]
    if args.with_model and not args.toolsets:
        from bench import model

        parts += ["", model.report(args)]
    report = "\n".join(parts) + "\n"
    print(report)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(report)


if __name__ == "__main__":
    main()
