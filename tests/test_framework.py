"""The hot route lives inside the framework: every middleware reaches it (CORS, request ids,
the body limit), a reverse proxy's root_path is honoured on it as on every route; and the
request log line says what happened, in text and in JSON."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

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
