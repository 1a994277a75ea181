"""Prometheus metrics. With several worker processes (``serve --workers N``) every process writes
its samples to PROMETHEUS_MULTIPROC_DIR and ``/metrics`` adds them up, so any process answers
for all of them."""

from __future__ import annotations

import os
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


_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, kept: labels() validates, builds a key and takes a lock on every
    call, several times per request. Label values here are bounded (routes, models, statuses)."""
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


def render() -> tuple[bytes, str]:
    """The exposition text of this process, or of every worker process when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
