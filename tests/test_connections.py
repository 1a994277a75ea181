"""Connections held without a request are closed (issue: hardening, finding 3), on the server as
deployed (opentess.server.uvicorn_config, the protocol of opentess.connections)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.world import World, make_settings, seed

PATIENCE_S = 30.0  # how long a test waits for the server to act (never asserted as a duration)


@pytest.fixture(scope="module")
def guarded(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, World]]:
    world = seed(
        make_settings(
            tmp_path_factory.mktemp("conn"),
            upstream.url,
            header_timeout_s=0.5,
            body_timeout_s=0.5,
            body_min_rate=10_000,
            keepalive_timeout_s=0.5,
            max_header_bytes=8192,
            max_connections=8,
        )
    )
    server = LiveServer(world.settings).start()
    yield server, world
    server.stop()


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(PATIENCE_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_a_connection_that_sends_nothing_is_closed(guarded: tuple[LiveServer, World]) -> None:
    server, _ = guarded
    with connect(server) as sock:
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer


def test_a_head_sent_a_line_at_a_time_is_cut_off(guarded: tuple[LiveServer, World]) -> None:
    """Each line arrives well inside the idle time, but the whole head never does."""
    server, _ = guarded
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        answer = b""
        sock.settimeout(0.2)
        while not answer and sent < 1000:
            try:
                sock.sendall(b"X-Slow: %d\r\n" % sent)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
    assert answer.startswith(b"HTTP/1.1 408")


def test_an_oversized_head_is_refused_before_it_is_buffered(guarded: tuple[LiveServer, World]) -> None:
    server, _ = guarded
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431")


def test_a_body_sent_too_slowly_is_cut_off(guarded: tuple[LiveServer, World]) -> None:
    server, world = guarded
    with connect(server) as sock:
        sock.sendall(
            b"POST /agents/1/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + world.token.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        sock.settimeout(0.2)
        answer = b""
        for _ in range(1000):
            try:
                sock.sendall(b" ")
                answer = sock.recv(65536)
                if answer:
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert answer.startswith(b"HTTP/1.1 408")


def test_a_chat_body_cut_off_is_no_server_error(
    guarded: tuple[LiveServer, World], caplog: pytest.LogCaptureFixture
) -> None:
    """The OpenAI route reads its body itself: a body cut off by the guard (or by a client that
    leaves) ends that request as the client's doing — logged at info as 499, not as an unhandled
    error answered 500."""
    server, world = guarded
    caplog.set_level(logging.INFO, logger="opentess")
    with connect(server) as sock:
        sock.sendall(
            f"POST /agents/{world.agent_id}/openai/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            f"{world.token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{".encode()
        )
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    for _ in range(200):  # the request's own line is logged once the app has returned
        lines = [r for r in caplog.records if r.name == "opentess.access" and getattr(r, "path", "").endswith(
            "/openai/chat/completions")]  # fmt: skip
        if lines:
            break
        time.sleep(0.05)
    assert [getattr(r, "status", None) for r in lines] == [499]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_an_idle_kept_alive_connection_is_closed(guarded: tuple[LiveServer, World]) -> None:
    server, _ = guarded
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}')


def test_connections_past_the_cap_are_refused_clearly_and_the_server_recovers(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    world = seed(make_settings(tmp_path_factory.mktemp("cap"), upstream.url, max_connections=4))
    server = LiveServer(world.settings).start()
    try:
        held = [connect(server) for _ in range(4)]
        try:
            refused = b""
            for _ in range(200):  # the server may not have accepted all four yet
                with connect(server) as extra:
                    refused = read_until_closed(extra)
                if refused.startswith(b"HTTP/1.1 503"):
                    break
                time.sleep(0.05)
            assert refused.startswith(b"HTTP/1.1 503") and b"Too many open connections" in refused
            # a client that sends its request before reading gets the answer and a clean close,
            # not a reset (the server reads and drops what it sends before closing): an HTTP
            # client that sees the reset reports it instead of the 503
            for _ in range(20):
                with connect(server) as eager:
                    eager.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                    time.sleep(0.05)  # the server's answer and its close arrive before the client reads
                    data = b""
                    while chunk := eager.recv(65536):  # ConnectionResetError fails the test
                        data += chunk
                    assert data.startswith(b"HTTP/1.1 503")
        finally:
            for sock in held:
                sock.close()
        for _ in range(200):  # until the server has seen the held ones close
            resp = httpx.get(f"{server.url}/healthz")
            if resp.status_code == 200:
                break
            time.sleep(0.05)
        assert resp.status_code == 200
    finally:
        server.stop()
