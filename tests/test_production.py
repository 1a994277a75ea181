"""Production mode in one process: rate limits, input limits, run timeout, metrics, request ids
and logs, SIGTERM, and the refusal to run several processes without shared state."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.processes import free_port, serve, write_config
from tests.support.waiting import wait_until
from tests.support.world import World, latest_execution, make_settings, seed, unlimited_token

CHAT = {"language": "en", "messages": [{"role": "user", "content": "x"}]}


@pytest.fixture(scope="module")
def limited(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, World]]:
    """A server with a default of 3 requests/min and 1 concurrent execution per token."""
    world = seed(
        make_settings(
            tmp_path_factory.mktemp("limited"),
            upstream.url,
            rate_limit_rpm=3,
            rate_limit_concurrency=1,
            max_messages=5,
            max_input_chars=1000,
            run_timeout_s=1.0,
        )
    )
    world.token = unlimited_token(world)  # the tests' admin: exempt from the 3/min default
    server = LiveServer(world.settings).start()
    yield server, world
    server.stop()


def client(server: LiveServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def fresh_token(http: httpx.Client, **limits: Any) -> str:
    """A new token of the same user, made through the management API (which counts as a request)."""
    resp = http.post("/tokens", json={"name": "t", **limits})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


def test_requests_per_minute_then_429(limited: tuple[LiveServer, World]) -> None:
    server, world = limited
    with client(server, world.token) as http:
        token = fresh_token(http)
    with client(server, token) as http:
        assert [http.get("/agents").status_code for _ in range(3)] == [200, 200, 200]
        native = http.get("/agents")
        assert native.status_code == 429
        assert native.json() == {
            "message": "Rate limit exceeded",
            "error": "Rate limit exceeded",
            "retry_after": int(native.headers["retry-after"]),
        }
        assert 1 <= int(native.headers["retry-after"]) <= 60
        oa = http.post(f"/agents/{world.agent_id}/openai/chat/completions", json=CHAT)
        assert oa.status_code == 429
        assert oa.json()["error"]["type"] == "rate_limit_error"
        assert oa.headers["retry-after"]


def test_a_token_can_have_its_own_limit(limited: tuple[LiveServer, World]) -> None:
    server, world = limited
    with client(server, world.other_token) as http:
        token = fresh_token(http, rpm_limit=2)
        listed = http.get("/tokens").json()["data"]
        assert [t["rpm_limit"] for t in listed if t["rpm_limit"]] == [2]
        # Bob's own token has the 3/min default: POST, GET, GET, then refused
        assert [http.get("/tokens").status_code for _ in range(2)] == [200, 429]
    with client(server, token) as http:
        codes = [http.get("/agents").status_code for _ in range(3)]
    assert codes == [200] * 2 + [429]


def test_concurrent_executions_limit(limited: tuple[LiveServer, World], upstream: FakeUpstream) -> None:
    server, world = limited
    with client(server, world.token) as admin:
        token = fresh_token(admin, rpm_limit=100)
    upstream.delay = 0.2
    upstream.chunks = ["a", "b", "c"]
    with client(server, token) as http:
        first = http.post(f"/agents/{world.agent_id}/execute", json=CHAT).json()["responses"][0]
        second = http.post(f"/agents/{world.agent_id}/execute", json=CHAT)
        assert second.status_code == 429
        wait_until(
            lambda: http.get(f"/agent-responses/{first['id']}").json()["status"] in ("succeeded", "failed"),
            "the first run ends",
        )
        assert http.post(f"/agents/{world.agent_id}/execute", json=CHAT).status_code == 200


def test_input_limits(limited: tuple[LiveServer, World]) -> None:
    server, world = limited
    with client(server, world.token) as admin:
        token = fresh_token(admin, rpm_limit=100)
    with client(server, token) as http:
        many = [{"role": "user" if i % 2 == 0 else "assistant", "content": "x"} for i in range(7)]
        resp = http.post(f"/agents/{world.agent_id}/openai/chat/completions", json={**CHAT, "messages": many})
        assert resp.status_code == 400
        assert "At most 5 messages" in resp.json()["error"]["message"]
        resp = http.post(f"/agents/{world.agent_id}/execute", json={**CHAT, "messages": many})
        assert resp.status_code == 422 and "messages" in resp.json()["errors"]
        long = {**CHAT, "messages": [{"role": "user", "content": "y" * 1001}]}
        resp = http.post(f"/agents/{world.agent_id}/openai/chat/completions", json=long)
        assert resp.status_code == 413 and "limit is 1000" in resp.json()["error"]["message"]
        assert http.post(f"/agents/{world.agent_id}/execute", json=long).status_code == 413


def test_run_timeout(limited: tuple[LiveServer, World], upstream: FakeUpstream) -> None:
    server, world = limited
    with client(server, world.token) as admin:
        token = fresh_token(admin, rpm_limit=100)
    upstream.delay = 0.4
    upstream.chunks = [f"{i} " for i in range(10)]
    with client(server, token) as http:
        resp = http.post(f"/agents/{world.agent_id}/openai/chat/completions", json={**CHAT, "stream": True})
        assert resp.status_code == 200
        events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
        assert "timed out after 1 s" in events[-1]
    stored = latest_execution(world.settings)
    assert stored["status"] == "failed" and "timed out" in str(stored["error"])


def test_metrics_count_a_request(http: httpx.Client, world: World) -> None:
    def requests_to_agents(text: str) -> float:
        for family in text_string_to_metric_families(text):
            if family.name == "opentess_requests":
                return sum(
                    s.value
                    for s in family.samples
                    if s.name == "opentess_requests_total" and s.labels["route"] == "/agents/{agent_id}"
                    and s.labels["status"] == "200"
                )  # fmt: skip
        return 0.0

    before = requests_to_agents(http.get("/metrics").text)
    assert http.get(f"/agents/{world.agent_id}").status_code == 200
    after_text = http.get("/metrics").text
    assert requests_to_agents(after_text) == before + 1
    names = {f.name for f in text_string_to_metric_families(after_text)}
    assert {
        "opentess_requests",
        "opentess_request_duration_seconds",
        "opentess_overhead_seconds",
        "opentess_execution_duration_seconds",
        "opentess_time_to_first_token_seconds",
        "opentess_tokens",
        "opentess_active_streams",
        "opentess_local_queue_wait_seconds",
        "opentess_upstream_errors",
    } <= names


def test_request_id_and_one_log_line_per_request(
    http: httpx.Client, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opentess.access")
    secret_text = "my secret message"
    body = {"language": "en", "messages": [{"role": "user", "content": secret_text}]}
    resp = http.post(f"/agents/{world.agent_id}/openai/chat/completions", json=body, headers={"X-Request-Id": "req-42"})
    assert resp.headers["x-request-id"] == "req-42"
    generated = http.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert http.get("/healthz", headers={"X-Request-Id": "bad id with spaces"}).headers["x-request-id"] != (
        "bad id with spaces"
    )
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == "req-42"]
    assert len(lines) == 1
    line = lines[0]
    assert line.route == "/agents/{agent_id}/openai/chat/completions"  # type: ignore[attr-defined]
    assert line.status == 200 and line.duration_ms > 0  # type: ignore[attr-defined]
    assert line.execution_id == resp.json()["agent_response"]["id"]  # type: ignore[attr-defined]
    assert all(secret_text not in r.getMessage() and secret_text not in str(r.__dict__) for r in caplog.records)
    assert all(world.token not in str(r.__dict__) for r in caplog.records)


def test_json_log_format() -> None:
    from opentess.logs import JsonFormatter

    record = logging.LogRecord("opentess.access", logging.INFO, __file__, 1, "request", (), None)
    record.request_id = "r1"
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["msg"] == "request" and entry["request_id"] == "r1" and entry["level"] == "info"
    assert entry["ts"].endswith("Z")


def test_sigterm_during_a_stream(tmp_path: Path, upstream: FakeUpstream) -> None:
    """The client gets a clean end (a final event, a complete chunked body), the execution is
    cancelled with its partial output, nothing stays running, and the process exits 0."""
    world = seed(make_settings(tmp_path / "data", upstream.url))
    upstream.delay = 0.2
    upstream.chunks = [f"{i} " for i in range(100)]
    port = free_port()
    proc = serve(
        write_config(tmp_path / "c.toml", upstream.url), tmp_path / "data", port, env={"OPENTESS_SHUTDOWN_GRACE_S": "1"}
    )
    events: list[str] = []
    finished_cleanly = threading.Event()

    def consume() -> None:
        with httpx.stream(
            "POST",
            f"http://127.0.0.1:{port}/agents/{world.agent_id}/openai/chat/completions",
            json={**CHAT, "stream": True},
            headers={"Authorization": f"Bearer {world.token}"},
            timeout=30,
        ) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
        finished_cleanly.set()  # iter_lines raises on a truncated chunked body

    reader = threading.Thread(target=consume)
    reader.start()
    deadline = time.monotonic() + 10
    while len(events) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    reader.join(20)
    out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out
    assert finished_cleanly.is_set()
    final = orjson.loads(events[-1])
    assert final["error"]["type"] == "cancelled"
    assert "shut down" in final["error"]["message"]
    stored = latest_execution(world.settings)
    assert stored["status"] == "cancelled"
    assert str(stored["output"]).startswith("0 1 ")
    assert stored["error"] == "cancelled: the server shut down"


def test_several_workers_need_redis(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "opentess", "serve", "--workers", "2", "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin", "OPENTESS_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "OPENTESS_REDIS_URL" in result.stderr
    assert "cancellation" in result.stderr
