"""Bad input gets a clear error in the route's wire format, and the server keeps serving."""

from __future__ import annotations

import socket

import httpx

from tests.support.live import LiveServer
from tests.support.world import World

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "language": "English"}


def url(live: LiveServer, world: World) -> str:
    return f"{live.url}/agents/{world.agent_id}/openai/chat/completions"


def still_serving(http: httpx.Client, world: World) -> None:
    resp = http.post(f"/agents/{world.agent_id}/openai/chat/completions", json=BODY)
    assert resp.status_code == 200


def test_malformed_json(http: httpx.Client, world: World) -> None:
    for raw in (b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe"):
        resp = http.post(
            f"/agents/{world.agent_id}/openai/chat/completions",
            content=raw,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 400, raw
        assert resp.json()["error"]["type"] == "invalid_request_error"
    still_serving(http, world)


def test_wrong_types(http: httpx.Client, world: World) -> None:
    for body in (
        {**BODY, "messages": {"role": "user"}},
        {**BODY, "temperature": [1]},
        {**BODY, "language": {"nested": True}},
        {**BODY, "stream_options": "yes"},
        {**BODY, "top_p": "high"},
    ):
        resp = http.post(f"/agents/{world.agent_id}/openai/chat/completions", json=body)
        assert resp.status_code == 400, body
        assert resp.json()["error"]["message"]
    still_serving(http, world)


def test_twenty_megabyte_body_is_413(http: httpx.Client, live: LiveServer, world: World) -> None:
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * (20 * 1024 * 1024) + b'"}]}'
    resp = http.post(
        f"/agents/{world.agent_id}/openai/chat/completions", content=big, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 413
    assert "limit" in resp.json()["error"]["message"]
    still_serving(http, world)


def test_chunked_oversized_body_is_413(http: httpx.Client, world: World) -> None:
    """Without a Content-Length the limit is enforced while reading."""

    def body() -> object:
        for _ in range(12):
            yield b"x" * (1024 * 1024)

    resp = http.post(
        f"/agents/{world.agent_id}/openai/chat/completions",
        content=body(),  # type: ignore[arg-type]
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    still_serving(http, world)


def test_garbage_on_the_socket(live: LiveServer, http: httpx.Client, world: World) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        sock.recv(1024)
    still_serving(http, world)


def test_native_error_shape_elsewhere(http: httpx.Client) -> None:
    resp = http.get("/no/such/route")
    assert resp.status_code == 404
    assert resp.json() == {"message": "Not Found", "error": "Not found"}
    resp = http.get("/agents/1/openai/chat/completions")
    assert resp.status_code == 405
    assert "error" in resp.json() and resp.json()["error"]["type"] == "invalid_request_error"
