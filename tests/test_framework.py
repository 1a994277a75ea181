"""The hot route lives inside the framework: every middleware reaches it (CORS, request ids,
the body limit), a reverse proxy's root_path is honoured on it as on every route; and the
request log line says what happened, in text and in JSON."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opentess.logs import setup_logging
from opentess.settings import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.world import World

CHAT = {"language": "en", "messages": [{"role": "user", "content": "hi"}]}
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def framed(world: World) -> Iterator[LiveServer]:
    settings = world.settings.model_copy(update={"cors_origins": [ORIGIN], "root_path": "/opentess"})
    server = LiveServer(settings).start()
    yield server
    server.stop()


def test_cors_covers_the_chat_route_preflight_and_post(framed: LiveServer, world: World) -> None:
    path = f"/agents/{world.agent_id}/openai/chat/completions"
    preflight = httpx.options(
        framed.url + path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    post = httpx.post(
        framed.url + path, json=CHAT, headers={"Origin": ORIGIN, "Authorization": f"Bearer {world.token}"}, timeout=30
    )
    assert post.status_code == 200
    assert post.headers["access-control-allow-origin"] == ORIGIN
    assert post.headers["x-request-id"]
    refused = httpx.post(framed.url + path, json=CHAT, headers={"Origin": "https://evil.example"}, timeout=30)
    assert "access-control-allow-origin" not in refused.headers
    other = httpx.get(framed.url + "/agents", headers={"Origin": ORIGIN, "Authorization": f"Bearer {world.token}"})
    assert other.headers["access-control-allow-origin"] == ORIGIN


def test_the_root_path_of_a_reverse_proxy_is_honoured(framed: LiveServer, world: World) -> None:
    """The proxy strips /opentess and says so (uvicorn's root_path): the hot route and the others
    match, and what the server writes back names the public paths."""
    headers = {"Authorization": f"Bearer {world.token}"}
    chat = httpx.post(f"{framed.url}/agents/{world.agent_id}/openai/chat/completions", json=CHAT, headers=headers)
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    listing = httpx.get(f"{framed.url}/agents", headers=headers).json()
    assert listing["path"].endswith("/opentess/agents")
    docs = httpx.get(f"{framed.url}/docs").text
    assert "/opentess/openapi.json" in docs
    bad = httpx.post(f"{framed.url}/agents/{world.agent_id}/openai/chat/completions", json={}, headers=headers)
    assert bad.status_code == 400 and "error" in bad.json()  # still the OpenAI error shape


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_failing_call_says_why_in_either_log_format(
    fmt: str, world: World, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stream = io.StringIO()
    setup_logging(Settings(data_dir=tmp_path_factory.mktemp("logs"), log_format=fmt), stream)  # type: ignore[arg-type]
    try:
        server = LiveServer(world.settings).start()
        try:
            upstream.mode = "error500"
            resp = httpx.post(
                f"{server.url}/agents/{world.agent_id}/openai/chat/completions",
                json=CHAT,
                headers={"Authorization": f"Bearer {world.token}"},
            )
            assert resp.status_code == 502
        finally:
            server.stop()
    finally:
        logging.getLogger().handlers.clear()
    lines = [line for line in stream.getvalue().splitlines() if "httpx" not in line]  # the test's own client
    access = [line for line in lines if "/openai/chat/completions" in line and "502" in line]
    assert len(access) == 1, lines
    cause = [line for line in lines if "upstream exploded" in line]
    assert cause, lines  # what the upstream said is in the log (never in the answer)
    if fmt == "json":
        entry = json.loads(access[0])
        assert entry["status"] == 502 and entry["method"] == "POST" and entry["execution_id"]
        assert "HTTP 500" in entry["error"]
        assert all("\x1b[" not in line for line in lines)
        assert all(json.loads(line) for line in lines)
    else:
        line = access[0]
        assert " POST /agents/" in line and " 502 " in line and " ms" in line
        assert "execution_id=" in line and "error=" in line and " WARNING " in line


def test_pending_metrics_expose_what_prometheus_client_would() -> None:
    """A single process counts its per-request samples itself and hands them to
    prometheus_client when /metrics is read: the exposition is the one prometheus_client makes
    from the same samples observed one by one (bucket edges included)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from opentess import metrics

    values = [0.0, 0.0005, 0.0005001, 0.001, 0.003, 0.25, 0.2500001, 7.0, 60.0, 121.0, -1.0]

    def exposition(pending: bool) -> bytes:
        registry = CollectorRegistry()
        histogram = Histogram("h", "h", ["route"], buckets=metrics._LATENCY, registry=registry)
        counter = Counter("c", "c", ["route"], registry=registry)
        h: Any
        c: Any
        if pending:
            h, c = metrics._PendingHistogram(histogram.labels("r")), metrics._PendingCounter(counter.labels("r"))
        else:
            h, c = histogram.labels("r"), counter.labels("r")
        for value in values:
            h.observe(value)
            c.inc(2)
        if pending:
            h.flush()
            c.flush()
            h.flush()  # a second flush hands nothing over twice
            c.flush()
        return b"\n".join(line for line in generate_latest(registry).splitlines() if b"_created" not in line)

    assert exposition(pending=True) == exposition(pending=False)
    with pytest.raises(ValueError, match="non-negative"):
        metrics._PendingCounter(None).inc(-1)


def test_the_agent_record_finds_the_first_question_of_a_name() -> None:
    from datetime import datetime

    from opentess.questions import Question
    from opentess.store.agents import AgentRecord

    first = Question(type="text", name="tone", default="calm")
    agent = AgentRecord(1, 1, "t", "t", "", "", "private", 1, "chat", "", [first, Question(type="text", name="tone")],
                        datetime(2026, 1, 1), datetime(2026, 1, 1))  # fmt: skip
    assert agent.question("tone") is first
    assert agent.question("missing") is None


def test_utcnow_is_naive_utc_to_the_microsecond() -> None:
    from datetime import UTC, datetime, timedelta

    from opentess.clock import utcnow

    before = datetime.now(UTC).replace(tzinfo=None)
    now = utcnow()
    after = datetime.now(UTC).replace(tzinfo=None)
    assert now.tzinfo is None
    # the two clocks are read a moment apart; neither may be ahead of the other by more than that
    assert before - timedelta(milliseconds=1) <= now <= after + timedelta(milliseconds=1)


@pytest.mark.parametrize("late", [False, True])
def test_exception_handling_answers_once(late: bool) -> None:
    """The leaner exception middleware answers a handled error in the route's format; one
    raised after the answer began is not answered a second time (the outermost middleware logs
    it and the connection ends), as Starlette's own middleware does; sync handlers run too."""
    import asyncio

    from starlette.middleware.exceptions import ExceptionMiddleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.types import Message, Receive, Scope, Send

    from opentess.api.errors import ExceptionHandling, render
    from opentess.api.observability import Observability
    from opentess.errors import NotFound, OpentessError

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/sync":
            raise KeyError("k")
        if late:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise NotFound("Not found")

    async def domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OpentessError)
        return render(request.url.path, exc)

    def sync(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("sync", status_code=418)

    stock = ExceptionMiddleware(app, handlers={OpentessError: domain, KeyError: sync})
    chain = Observability(ExceptionHandling.replacing(stock))

    def call(path: str) -> list[Message]:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": b"", "headers": [], "scheme": "http", "server": ("t", 80)}  # fmt: skip
        asyncio.run(chain(scope, receive, send))
        return sent

    starts = [m for m in call("/agents/1") if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == ([200] if late else [404])
    assert [m["status"] for m in call("/sync") if m["type"] == "http.response.start"] == [418]


def test_the_hot_route_reads_a_body_in_pieces_and_hears_a_disconnect() -> None:
    import asyncio

    from starlette.requests import ClientDisconnect
    from starlette.types import Message

    from opentess.api.bodies import receive_body

    def channel(*messages: Message) -> Any:
        pending = list(messages)

        async def receive() -> Message:
            return pending.pop(0)

        return receive

    pieces = channel(
        {"type": "http.request", "body": b'{"a"', "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b": 1}", "more_body": False},
    )
    assert asyncio.run(receive_body(pieces)) == b'{"a": 1}'
    assert asyncio.run(receive_body(channel({"type": "http.request"}))) == b""
    gone = channel({"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"})
    with pytest.raises(ClientDisconnect):
        asyncio.run(receive_body(gone))
