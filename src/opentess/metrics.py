"""Prometheus metrics. With several worker processes (``serve --workers N``) every process writes
its samples to PROMETHEUS_MULTIPROC_DIR and ``/metrics`` adds them up, so any process answers
for all of them.

The per-request samples (``child``) of a single process are counted in plain attributes and
handed to prometheus_client when ``/metrics`` is read: a prometheus_client sample takes a lock
per value (a histogram observation two, after a walk of its buckets), and a request records
six of them — ~4 µs of the hot route's ~150 µs of CPU on the event loop (measured in-process,
prometheus_client 0.26). With several processes each sample is written through at once, as
the exposition of every process must be current whichever process answers ``/metrics``."""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "opentess_requests", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
REQUEST_SECONDS = Histogram("opentess_request_duration_seconds", "Whole request duration", ["route"], buckets=_LATENCY)
OVERHEAD_SECONDS = Histogram(
    "opentess_overhead_seconds",
    "Time a request spent outside the model (auth, validation, storage, encoding)",
    ["route"],
    buckets=_LATENCY,
)
EXECUTION_SECONDS = Histogram(
    "opentess_execution_duration_seconds",
    "Execution duration by model and outcome",
    ["model", "status"],
    buckets=_LATENCY,
)
FIRST_TOKEN_SECONDS = Histogram(
    "opentess_time_to_first_token_seconds",
    "Time from the start of a run to its first text",
    ["model"],
    buckets=_LATENCY,
)
TOKENS = Counter(
    "opentess_tokens", "Tokens by model and direction (in = prompt, out = completion)", ["model", "direction"]
)
ACTIVE_STREAMS = Gauge("opentess_active_streams", "Streaming responses in progress", multiprocess_mode="livesum")
QUEUE_WAIT_SECONDS = Histogram(
    "opentess_local_queue_wait_seconds", "Wait for a local model's turn (FIFO queue)", ["model"], buckets=_LATENCY
)
LOCAL_TOKENS = Counter("opentess_local_generated_tokens", "Tokens a local model generated, finished or not", ["model"])
UPSTREAM_ERRORS = Counter("opentess_upstream_errors", "Failed upstream calls by model and kind", ["model", "kind"])


class _PendingCounter:
    """A counter child's increments not yet handed to prometheus_client."""

    __slots__ = ("pending", "real")

    def __init__(self, real: Any) -> None:
        self.real = real
        self.pending = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            amount, self.pending = self.pending, 0.0
            self.real.inc(amount)


class _PendingHistogram:
    """A histogram child's observations not yet handed to prometheus_client: a count per bucket
    and their sum (prometheus_client's own bucket rule: the first upper bound ≥ the value)."""

    __slots__ = ("bounds", "counts", "real", "total")

    def __init__(self, real: Any) -> None:
        self.real = real
        self.bounds: list[float] = list(real._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount

    def flush(self) -> None:
        counts, self.counts = self.counts, [0] * len(self.bounds)
        if any(counts):
            for bucket, count in zip(self.real._buckets, counts, strict=True):
                if count:
                    bucket.inc(count)
            self.real._sum.inc(self.total)
            self.total = 0.0


_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)`` for a sample (``inc`` or ``observe``), kept: labels()
    validates, builds a key and takes a lock on every call. Label values here are bounded
    (routes, models, statuses). In a single process the samples are pending until ``render``
    (the module docstring)."""
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = metric.labels(*labels)
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            found = _PendingHistogram(found) if isinstance(metric, Histogram) else _PendingCounter(found)
        _CHILDREN[key] = found
    return found


def flush() -> None:
    """Hand every pending sample of this process to prometheus_client."""
    for found in list(_CHILDREN.values()):
        if isinstance(found, _PendingCounter | _PendingHistogram):
            found.flush()


def render() -> tuple[bytes, str]:
    """The exposition text of this process, or of every worker process when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    flush()
    return generate_latest(), CONTENT_TYPE_LATEST
