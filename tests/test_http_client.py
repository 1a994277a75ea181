"""The upstream leg's HTTP/1.1 client against a raw socket server that answers exactly as each test
says: bodies by length, chunked, or ended by close; gzip; keep-alive reuse and its races; timeouts;
answers that are not HTTP; TLS; a response dropped half-read; SSE split anywhere across reads; the
cap on connections per origin, and closing an origin."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from opentess.providers import http
from opentess.providers.openai import _sse_data

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEAD = http.request_head("http://upstream.test/v1/chat/completions", {"Content-Type": "application/json"})


class Server:
    """A raw TCP server; every accepted connection is counted and handed to ``handler``."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://{'localhost' if self.tls else '127.0.0.1'}:{port}/v1"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body


Run = Callable[[Callable[[], Awaitable[None]]], None]


_ORIGINS: list[http.Origin] = []


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a test's coroutine on asyncio's own loop and on uvloop (the server's loop)."""

    def runner(main: Callable[[], Awaitable[None]]) -> None:
        async def wrapped() -> None:
            try:
                await main()
            finally:
                while _ORIGINS:
                    _ORIGINS.pop().close()

        factory = uvloop.new_event_loop if request.param == "uvloop" else None
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(wrapped())

    return runner


def origin(server: Server, read_timeout: float | None = 5.0, max_connections: int = 64) -> http.Origin:
    """An origin for ``server``, closed when the test's coroutine ends."""
    made = http.Origin(server.url, 5.0, read_timeout, max_connections)
    _ORIGINS.append(made)
    return made


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_bodies_by_length_chunked_and_by_close_and_keep_alive_reuse(run: Run) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        srv = server
        await srv.read_request(reader)
        writer.write(answer(b'{"a": 1}', "Content-Type: application/json", "Content-Length: 8"))
        await srv.read_request(reader)
        writer.write(answer(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "Transfer-Encoding: chunked"))
        await srv.read_request(reader)
        writer.write(answer(b"until the end", "Connection: close"))
        await writer.drain()

    server = Server(handler)

    async def main() -> None:
        async with server:
            up = origin(server)
            resp = await up.post(HEAD, b'{"q": 1}')
            assert (resp.status, resp.content_type) == (200, "application/json")
            assert await resp.read() == b'{"a": 1}'
            resp.close()
            resp = await up.post(HEAD, b"{}")
            assert await resp.read() == b"hello world"
            resp.close()
            resp = await up.post(HEAD, b"{}")
            assert await resp.read() == b"until the end"
            resp.close()
            assert server.connections == 1  # all three on one kept-alive connection
            assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: upstream.test\r\n")
            assert server.requests[0].endswith(b'Content-Length: 8\r\n\r\n{"q": 1}')

    run(main)


def test_gzip_body_is_decompressed(run: Run) -> None:
    payload = b'{"choices": []}' * 100
    packed = gzip.compress(payload)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer(packed, "Content-Encoding: gzip", f"Content-Length: {len(packed)}"))
        await writer.drain()

    server = Server(handler)

    async def main() -> None:
        async with server:
            resp = await origin(server).post(HEAD, b"{}")
            assert await resp.read() == payload
            resp.close()

    run(main)


def test_a_pooled_connection_closed_by_the_server_is_retried_on_a_new_one(run: Run) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server.connections == 1:
            await server.read_request(reader)
            writer.write(answer(b"one", "Content-Length: 3"))
            await writer.drain()
            # the keep-alive race: the server drops the idle connection as the next request goes
            # out (here: once that request has arrived), without answering it
            await reader.read(1)
            return
        while True:
            await server.read_request(reader)
            writer.write(answer(b"two", "Content-Length: 3"))
            await writer.drain()

    server = Server(handler)

    async def main() -> None:
        async with server:
            up = origin(server)
            resp = await up.post(HEAD, b"{}")
            assert await resp.read() == b"one"
            resp.close()
            resp = await up.post(HEAD, b"{}")
            assert await resp.read() == b"two"
            resp.close()
            assert server.connections == 2

    run(main)


def test_a_fresh_connection_closed_without_an_answer_is_an_error(run: Run) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)

    server = Server(handler)

    async def main() -> None:
        async with server:
            with pytest.raises(ConnectionResetError, match="without answering"):
                await origin(server).post(HEAD, b"{}")
            assert server.connections == 1  # not retried: the request may have been acted on

    run(main)


def test_closed_mid_body_and_silence_and_garbage_are_errors(run: Run) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await server.read_request(reader)
        if body == b"cut":
            writer.write(answer(b"only part", "Content-Length: 100"))
        elif body == b"silent":
            writer.write(answer(b"part", "Content-Length: 100"))
            await writer.drain()
            await asyncio.sleep(5)
        else:
            writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    server = Server(handler)

    async def main() -> None:
        async with server:
            up = origin(server, read_timeout=0.2)
            resp = await up.post(HEAD, b"cut")
            with pytest.raises(ConnectionResetError, match="mid-answer"):
                await resp.read()
            resp.close()
            resp = await up.post(HEAD, b"silent")
            with pytest.raises(TimeoutError):
                await resp.read()
            resp.close()
            with pytest.raises(http.ProtocolError, match="not valid HTTP"):
                await up.post(HEAD, b"garbage")

    run(main)


def test_no_answer_in_time_is_a_timeout_and_no_listener_an_os_error(run: Run) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    server = Server(handler)

    async def main() -> None:
        async with server:
            with pytest.raises(TimeoutError):
                await origin(server, read_timeout=0.2).post(HEAD, b"{}")
            url = server.url
        with pytest.raises(ConnectionRefusedError):
            await http.Origin(url, 5.0, 1.0).post(HEAD, b"{}")

    run(main)


def test_closing_a_half_read_response_drops_the_connection(run: Run) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer(b"", "Content-Type: text/event-stream", "Transfer-Encoding: chunked"))
        try:
            for _ in range(100):
                writer.write(b'f\r\ndata: {"x":1}\n\n\r\n')
                await writer.drain()
                await asyncio.sleep(0.02)
        finally:
            server.closed_by_client.set()

    server = Server(handler)

    async def main() -> None:
        async with server:
            resp = await origin(server).post(HEAD, b"{}")
            async for chunk in resp.iter_chunks():
                assert chunk.startswith(b"data:")
                break
            resp.close()
            await asyncio.wait_for(server.closed_by_client.wait(), 2)

    run(main)


def test_a_large_body_is_read_whole_with_reading_paused_and_resumed(run: Run) -> None:
    payload = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MB, over the pause threshold

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer(payload, f"Content-Length: {len(payload)}"))
        await writer.drain()

    server = Server(handler)

    async def main() -> None:
        async with server:
            resp = await origin(server).post(HEAD, b"{}")
            await asyncio.sleep(0.2)  # let it all arrive before anything is read
            assert await resp.read() == payload
            resp.close()

    run(main)


def test_tls_with_a_certificate_the_system_trusts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read by ssl.create_default_context()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer(b"secret", "Content-Length: 6"))
        await writer.drain()

    server = Server(handler, tls=context)

    async def main() -> None:
        async with server:
            resp = await origin(server).post(HEAD, b"{}")
            assert await resp.read() == b"secret"
            resp.close()
        monkeypatch.delenv("SSL_CERT_FILE")
        async with Server(handler, tls=context) as untrusted:
            with pytest.raises(ssl.SSLCertVerificationError):
                await origin(untrusted).post(HEAD, b"{}")

    run(main)


class Chunks:
    """Stands in for a response whose body arrives in the given pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


async def payloads(pieces: list[bytes]) -> list[bytes]:
    return [p async for p in _sse_data(Chunks(pieces))]  # type: ignore[arg-type]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_events_split_at_every_byte(newline: bytes) -> None:
    stream = newline.join(
        [b": comment", b"data: one", b"", b"event: x", b"data: two", b"data:three", b"", b"data: [DONE]", b"", b""]
    )
    expected = [b"one", b"two\nthree", b"[DONE]"]
    for cut in range(len(stream) + 1):
        assert asyncio.run(payloads([stream[:cut], stream[cut:]])) == expected, cut
    assert asyncio.run(payloads([bytes([b]) for b in stream])) == expected
    assert asyncio.run(payloads([b"data: last, no blank line"])) == [b"last, no blank line"]


def test_idle_connections_are_dropped_not_reused(monkeypatch: pytest.MonkeyPatch, run: Run) -> None:
    """Connections idle past IDLE_S are closed (all of them, not only the one a request would
    take) and a new one is opened: servers drop idle keep-alive connections on their own."""
    monkeypatch.setattr(http, "IDLE_S", 0.1)
    closed = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal closed
        try:
            while True:
                await server.read_request(reader)
                await asyncio.sleep(0.02)
                writer.write(answer(b"ok", "Content-Length: 2"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            closed += 1

    server = Server(handler)

    async def one(up: http.Origin) -> None:
        resp = await up.post(HEAD, b"{}")
        assert await resp.read() == b"ok"
        resp.close()

    async def main() -> None:
        async with server:
            up = origin(server)
            await asyncio.gather(one(up), one(up), one(up))
            assert server.connections == 3
            await one(up)
            assert server.connections == 3  # reused while fresh
            await asyncio.sleep(0.3)
            await one(up)
            assert server.connections == 4
            await asyncio.sleep(0.1)
            assert closed == 3

    run(main)


def test_connections_per_origin_are_capped_and_waiting_requests_take_released_ones(run: Run) -> None:
    """With max_connections = 2, a third request waits; when a response is read and closed, the
    waiting request goes out on that kept-alive connection (no third connection is ever opened)."""
    release, two_arrived = asyncio.Event(), asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            if len(server.requests) == 2:
                two_arrived.set()
            await release.wait()
            writer.write(answer(b"ok", "Content-Length: 2"))
            await writer.drain()

    server = Server(handler)

    async def main() -> None:
        async with server:
            up = origin(server, max_connections=2)
            posts = [asyncio.ensure_future(up.post(HEAD, b"{}")) for _ in range(3)]
            await asyncio.wait_for(two_arrived.wait(), 5)
            assert up.open_connections == 2 and not any(p.done() for p in posts)
            release.set()
            first = await posts[0]
            assert await first.read() == b"ok"
            first.close()  # pooled: the waiting request takes it
            for post in posts[1:]:
                resp = await post
                assert await resp.read() == b"ok"
                resp.close()
            assert server.connections == 2 and len(server.requests) == 3

    run(main)


def test_no_free_connection_within_the_read_timeout_is_a_timeout(run: Run) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer(b"", "Content-Type: text/event-stream", "Transfer-Encoding: chunked"))
        await writer.drain()
        await asyncio.sleep(5)

    server = Server(handler)

    async def main() -> None:
        async with server:
            up = origin(server, read_timeout=0.2, max_connections=1)
            busy = await up.post(HEAD, b"{}")  # its body never ends: the one connection stays busy
            with pytest.raises(TimeoutError):
                await up.post(HEAD, b"{}")
            assert server.connections == 1
            busy.close()
            assert up.open_connections == 0

    run(main)


def test_closing_an_origin_closes_idle_and_busy_connections(run: Run) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                body = await server.read_request(reader)
                if body == b"stream":
                    writer.write(answer(b"", "Content-Type: text/event-stream", "Transfer-Encoding: chunked"))
                    await writer.drain()
                    await reader.read(1)  # until the client goes away
                    return
                writer.write(answer(b"ok", "Content-Length: 2"))
                await writer.drain()
        finally:
            server.closed_by_client.set()

    server = Server(handler)

    async def main() -> None:
        async with server:
            up = origin(server)
            busy = await up.post(HEAD, b"stream")
            idle = await up.post(HEAD, b"{}")
            assert await idle.read() == b"ok"
            idle.close()
            assert up.open_connections == 2 and server.connections == 2
            up.close()
            assert up.open_connections == 0
            with pytest.raises(ConnectionResetError):
                await busy.read()
            await asyncio.wait_for(server.closed_by_client.wait(), 2)

    run(main)
