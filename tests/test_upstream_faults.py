"""Upstream failures become clear errors (502/504 before the first chunk, a final error event
after it) and the execution is stored failed with the error."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from opentess.settings import ModelConfig
from tests.support import fake_provider
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.world import FAKE_MODEL, World, latest_execution, make_settings, seed

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "language": "English"}


def post(http: httpx.Client, world: World, **extra: Any) -> httpx.Response:
    return http.post(f"/agents/{world.agent_id}/openai/chat/completions", json={**BODY, **extra})


def sse_events(http: httpx.Client, world: World, **extra: Any) -> tuple[int, list[str]]:
    url = f"/agents/{world.agent_id}/openai/chat/completions"
    with http.stream("POST", url, json={**BODY, "stream": True, **extra}) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp.status_code, [resp.text]
        return 200, [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]


def assert_failed(world: World, fragment: str) -> dict[str, Any]:
    stored = latest_execution(world.settings)
    assert stored["status"] == "failed"
    assert fragment in str(stored["error"])
    return stored


@pytest.mark.parametrize("stream", [False, True])
def test_connection_refused_is_502(http: httpx.Client, world: World, stream: bool) -> None:
    if stream:
        status, body = sse_events(http, world, model="dead-upstream")
        assert status == 502
        assert "cannot reach the upstream" in body[0]
    else:
        resp = post(http, world, model="dead-upstream")
        assert resp.status_code == 502
        err = resp.json()["error"]
        assert "cannot reach the upstream" in err["message"] and err["type"] == "upstream_error"
    assert_failed(world, "cannot reach the upstream")


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_http_500_is_502_naming_the_status_not_the_upstreams_words(
    http: httpx.Client, world: World, upstream: FakeUpstream, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller learns the model and the status; what the upstream said (it may name internal
    hosts or echo a key) goes to the log."""
    upstream.mode = "error500"
    with caplog.at_level(logging.WARNING, logger="opentess.providers.openai"):
        if stream:
            status, body = sse_events(http, world)
            assert status == 502 and "HTTP 500" in body[0] and "exploded" not in body[0]
        else:
            resp = post(http, world)
            assert resp.status_code == 502
            assert "HTTP 500" in resp.json()["error"]["message"]
            assert "exploded" not in resp.json()["error"]["message"]
    assert_failed(world, "HTTP 500")
    assert any("upstream exploded" in r.getMessage() and upstream.url in r.getMessage() for r in caplog.records)


def test_malformed_sse_is_502(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    upstream.mode = "malformed"
    status, body = sse_events(http, world)
    assert status == 502
    assert "malformed" in body[0]
    assert_failed(world, "malformed")


@pytest.mark.parametrize("stream", [False, True])
def test_hang_past_the_timeout_is_504(http: httpx.Client, world: World, upstream: FakeUpstream, stream: bool) -> None:
    upstream.mode = "hang"
    if stream:
        status, _body = sse_events(http, world)
        assert status == 504
    else:
        resp = post(http, world)
        assert resp.status_code == 504
        assert resp.json()["error"]["type"] == "upstream_timeout"
    assert_failed(world, "did not answer in time")


def test_hang_after_the_first_chunk_ends_with_an_error_event(
    http: httpx.Client, world: World, upstream: FakeUpstream
) -> None:
    upstream.mode = "hang_mid"
    status, events = sse_events(http, world)
    assert status == 200
    assert '"content":"Hello"' in events[0]
    assert '"error"' in events[-1] and "stopped sending" in events[-1]
    assert "[DONE]" not in events
    stored = assert_failed(world, "stopped sending")
    assert stored["output"] == "Hello"


def test_stream_closed_early_is_an_error_event(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    upstream.mode = "no_done"
    status, events = sse_events(http, world)
    assert status == 200
    assert "closed the stream before finishing" in events[-1]
    assert_failed(world, "closed the stream")


def test_openai_sdk_raises_on_a_late_error(live: Any, world: World, upstream: FakeUpstream) -> None:
    import openai

    upstream.mode = "hang_mid"
    client = openai.OpenAI(base_url=f"{live.url}/agents/{world.agent_id}/openai", api_key=world.token, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True, extra_body={"language": "en"}
    )
    with pytest.raises(openai.APIError, match="stopped sending"):
        list(stream)


def test_a_failed_insert_cancels_the_model_call_sent_early(upstream: FakeUpstream, tmp_path: Path) -> None:
    """A non-streaming call sends the model its request while the execution is being stored; when
    storing fails, that call is cancelled (nothing would ever read its answer) and the caller gets
    the storage error at once.

    The model is a provider registered from the tests (it waits until cancelled, and says so);
    the store fails for real: a trigger makes the database refuse the insert."""
    slow = fake_provider.script("failed-insert", mode="slow")
    settings = make_settings(
        tmp_path / "data",
        upstream.url,
        models={
            FAKE_MODEL: ModelConfig(provider=fake_provider.FAKE_PROVIDER, script="failed-insert"),
            "dead-upstream": ModelConfig(provider="openai", base_url="http://127.0.0.1:9/v1"),
        },
    )
    world = seed(settings)
    with sqlite3.connect(settings.data_dir / "opentess.db") as db:
        db.execute(
            "CREATE TRIGGER refuse_executions BEFORE INSERT ON executions "
            "BEGIN SELECT RAISE(ABORT, 'the database is gone'); END"
        )
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {world.token}"}, timeout=30) as http:
            resp = post(http, world)
            assert resp.status_code == 500 and resp.json()["error"]["type"] == "server_error"
            assert slow.started.is_set() and slow.cancelled.wait(5)

            with sqlite3.connect(settings.data_dir / "opentess.db") as db:
                db.execute("DROP TRIGGER refuse_executions")
            slow.mode = "ok"
            resp = post(http, world)
            assert resp.status_code == 200
            assert resp.json()["choices"][0]["message"]["content"] == "Hello from the fake."
    finally:
        server.stop()


def test_server_keeps_serving_after_faults(http: httpx.Client, world: World) -> None:
    resp = post(http, world)
    assert resp.status_code == 200
