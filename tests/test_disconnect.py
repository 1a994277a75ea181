"""A client that goes away mid-stream stops the generation; the execution ends cancelled with the
text produced so far. Tested with a real socket that is reset, and by driving the ASGI app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from opentess.api.app import create_app
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.raw import abort, open_stream
from tests.support.world import World, execution, latest_execution


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_disconnect_stops_the_upstream(live: LiveServer, world: World, upstream: FakeUpstream) -> None:
    upstream.delay = 0.2
    upstream.chunks = [f"w{i} " for i in range(50)]
    body = {"messages": [{"role": "user", "content": "long"}], "language": "English", "stream": True}
    sock, first = open_stream(live.port, f"/agents/{world.agent_id}/openai/chat/completions", world.token, body)
    assert b"w0 " in first
    abort(sock)
    # the upstream sees its connection closed long before its 50 chunks (10 s) are out
    assert upstream.disconnected.wait(5)
    assert len(upstream.chunk_sent_at) < 20
    wait_for(lambda: latest_execution(world.settings)["status"] == "cancelled")
    stored = latest_execution(world.settings)
    assert str(stored["output"]).startswith("w0 ")
    assert stored["credits"] is None


@pytest.mark.model
def test_disconnect_frees_the_local_model_queue(live: LiveServer, world: World) -> None:
    """A long local generation abandoned by its client stops; the next request is served promptly."""
    body = {
        "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
        "max_tokens": 1500,
        "stream": True,
    }
    path = f"/agents/{world.local_agent_id}/openai/chat/completions"
    sock, first = open_stream(live.port, path, world.token, body)
    assert b"data: " in first
    abort(sock)
    wait_for(lambda: latest_execution(world.settings)["status"] == "cancelled")
    cancelled = latest_execution(world.settings)
    assert cancelled["output"]
    # the generation stopped: the model's token count no longer grows
    generated = _generated_tokens(live)
    time.sleep(0.5)
    assert _generated_tokens(live) == generated
    resp = httpx.post(
        f"{live.url}{path}",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {world.token}"},
        timeout=60,
    )
    assert resp.status_code == 200
    assert _generated_tokens(live) <= generated + 4  # the next run got the model: only its own tokens
    later = execution(world.settings, int(cancelled["id"]))  # type: ignore[call-overload]
    assert later["status"] == "cancelled" and later["output"] == cancelled["output"]


def _generated_tokens(live: LiveServer) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{live.url}/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "opentess_local_generated_tokens":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


def test_disconnect_by_driving_the_asgi_app(world: World, upstream: FakeUpstream) -> None:
    """The ASGI receive channel reports http.disconnect after the first chunk; the run is cancelled."""
    upstream.delay = 0.2
    upstream.chunks = [f"c{i} " for i in range(30)]
    app = create_app(world.settings)
    body = orjson.dumps({"messages": [{"role": "user", "content": "x"}], "language": "en", "stream": True})
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        first_chunk = asyncio.Event()
        body_given = False

        async def receive() -> dict[str, Any]:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await first_chunk.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and b"data: " in message.get("body", b""):
                first_chunk.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": f"/agents/{world.agent_id}/openai/chat/completions",
            "raw_path": b"",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", f"Bearer {world.token}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(app(scope, receive, send), 10)

    asyncio.run(scenario())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert b"c0 " in bodies[0]["body"]
    assert not any(b"[DONE]" in m.get("body", b"") for m in bodies)
    assert upstream.disconnected.wait(5)
    stored = latest_execution(world.settings)
    assert stored["status"] == "cancelled"
    assert str(stored["output"]).startswith("c0 ")


def test_disconnect_cancels_a_non_streaming_run(live: LiveServer, world: World, upstream: FakeUpstream) -> None:
    """A client that gives up on a non-streaming call cancels the run instead of leaving it to the
    upstream's timeout (which would store it failed 1.5 s later)."""
    import json
    import socket

    upstream.mode = "hang"
    before = int(latest_execution(world.settings)["id"])  # type: ignore[call-overload]
    payload = json.dumps({"messages": [{"role": "user", "content": "x"}], "language": "en"}).encode()
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    sock.sendall(
        (
            f"POST /agents/{world.agent_id}/openai/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {world.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        + payload
    )
    wait_for(lambda: int(latest_execution(world.settings)["id"]) > before)  # type: ignore[call-overload]
    abort(sock)
    wait_for(lambda: latest_execution(world.settings)["status"] != "running", timeout=5)
    assert latest_execution(world.settings)["status"] == "cancelled"
