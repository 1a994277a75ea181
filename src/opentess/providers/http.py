"""A small HTTP/1.1 client for the upstream leg: one POST at a time per connection, kept-alive
connections pooled per origin, at most ``max_connections`` of them open at once, responses parsed
by httptools (the parser uvicorn uses for the other leg). An ``Origin`` belongs to whoever made it
(a provider's transport), is used in one event loop, and is closed by its owner.

It replaces aiohttp's client on the hot path, where that client cost about a quarter of opentess's
CPU per call (bench/README.md, "What made it fast"). It does only what the upstream leg needs: a
request whose body is already bytes, a response read whole or chunk by chunk as it arrives, a
connect timeout and a read timeout (the longest silence allowed between two reads, and the longest
wait for a free connection when all are busy), TLS with the system's certificates, gzip/deflate
bodies, and the failures a caller must tell apart: OSError (cannot connect, reset, closed early,
TLS), TimeoutError, ProtocolError (not HTTP/1.x). No proxies, no custom CA: the httpx transport
(opentess.providers.transport) does those.

A response must be closed. Closing one that was read to its end returns the connection to the
pool; closing one that was not (a client went away mid-stream) drops the connection, so that the
upstream sees the disconnect and stops generating."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import SplitResult, urlsplit

import httptools

IDLE_S = 4.0
"""An idle connection older than this is not reused: servers close idle keep-alive connections
after a few seconds (uvicorn after 5), and a request sent as one closes would fail."""
PAUSE_BYTES = 1 << 20
"""Unread body bytes at which reading pauses until the consumer catches up."""


def _split(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return parts


def request_head(url: str, headers: dict[str, str]) -> bytes:
    """The request line and headers of a POST to ``url``, up to the value of Content-Length
    (which :meth:`Origin.post` adds): built once per upstream, not per call."""
    parts = _split(url)
    tls = parts.scheme == "https"
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    if parts.port is not None and parts.port != (443 if tls else 80):
        host = f"{host}:{parts.port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


class ProtocolError(OSError):
    """The upstream's answer is not valid HTTP/1.x."""


class Origin:
    """Where requests go (scheme, host, port), and the pool of connections there: at most
    ``max_connections`` open at once, idle or busy; a request that finds them all busy waits for
    one (as long as the read timeout allows)."""

    def __init__(
        self, url: str, connect_timeout: float | None, read_timeout: float | None, max_connections: int = 64
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        parts = _split(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._idle: deque[tuple[float, _Connection]] = deque()
        self._open: set[_Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self.tls else None

    @property
    def open_connections(self) -> int:
        """Connections open or being opened, idle ones included."""
        return len(self._open) + self._opening

    async def post(self, head: bytes, body: bytes) -> Response:
        """Sends the request and returns once the response's status and headers have arrived. A
        pooled connection that the server closed as the request went out is retried once on a new
        connection, as long as not one byte of an answer came back."""
        message = b"%s%d\r\n\r\n%s" % (head, len(body), body)
        reuse = True
        while True:
            conn = self._idle_connection() if reuse else None
            if conn is not None:
                try:
                    return await conn.send(message, self.read_timeout)
                except _ClosedBeforeAnswer:
                    # the others may be as stale: drop them, and open a fresh one
                    reuse = False
                    self._drop_idle()
                    continue
            if self.open_connections < self.max_connections:
                break
            await self._wait_for_connection()
            reuse = True  # a connection released since then is a fresh one
        conn = await self._connect()
        try:
            return await conn.send(message, self.read_timeout)
        except _ClosedBeforeAnswer as exc:
            raise ConnectionResetError("the upstream closed the connection without answering") from exc

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        idle = self._idle  # in release order: stale ones on the left, dropped; fresh ones taken from the right
        while idle and now - idle[0][0] > IDLE_S:
            idle.popleft()[1].abort()
        while idle:
            conn = idle.pop()[1]
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                conn.abort()
                continue
            return conn
        return None

    def _drop_idle(self) -> None:
        while self._idle:
            self._idle.pop()[1].abort()

    async def _wait_for_connection(self) -> None:
        """Until a connection is released or closed; TimeoutError past the read timeout (for the
        caller, a slot that does not come is an upstream that does not answer)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.read_timeout):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken, but leaving (timeout, cancelled): the turn goes to the next
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        self._opening += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
        except BaseException:
            self._opening -= 1
            if self._waiters:
                self._wake_one()
            raise
        self._opening -= 1
        if conn.closed:  # lost already, before this line ran
            if self._waiters:
                self._wake_one()
            raise ConnectionResetError("the upstream closed the connection")
        self._open.add(conn)
        return conn

    def release(self, conn: _Connection) -> None:
        self._idle.append((time.monotonic(), conn))
        if self._waiters:
            self._wake_one()

    def forget(self, conn: _Connection) -> None:
        """A connection has closed: its place may go to a waiting request."""
        if conn in self._open:
            self._open.discard(conn)
            if self._waiters:
                self._wake_one()

    def close(self) -> None:
        """Closes every connection, idle or busy (a busy one's response fails)."""
        self._drop_idle()
        for conn in list(self._open):
            conn.abort()
        self._open.clear()


class _ClosedBeforeAnswer(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the response being read on it."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.response: Response | None = None
        # one parser for the connection's successive responses; its callbacks are this object's
        # (a parser per response would tie each response to its parser in a reference cycle)
        self.parser = httptools.HttpResponseParser(self)

    # httptools callbacks, for the response being read
    def on_status(self, status: bytes) -> None:
        if self.response is not None:
            self.response.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response._header(name, value)

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response._headers_complete(self.parser.get_status_code(), bool(self.parser.should_keep_alive()))

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._body(body)

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response._message_complete()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    async def send(self, message: bytes, read_timeout: float | None) -> Response:
        assert self.transport is not None
        response = self.response = Response(self, read_timeout)
        self.transport.write(message)
        try:
            await response._wait_headers()
        except BaseException:
            self.abort()
            raise
        return response

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response._closed:  # bytes while idle: nothing on it may be trusted
            self.abort()
            return
        response._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(ProtocolError(f"the upstream's answer is not valid HTTP: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.origin.forget(self)
        response = self.response
        if response is not None and not response.complete:
            response._lost(exc)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.origin.forget(self)

    def done(self, response: Response) -> None:
        """The response was read to its end and closed: pool the connection if it may be reused."""
        self.response = None
        if response._keep_alive and not self.closed and self.transport is not None:
            self.origin.release(self)
        else:
            self.abort()


class Response:
    """Status and headers on arrival; the body through :meth:`read` or :meth:`iter_chunks`."""

    def __init__(self, conn: _Connection, read_timeout: float | None) -> None:
        self._conn = conn
        self._timeout = read_timeout
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.complete = False
        self._received = False
        self._headers_done = False
        self._keep_alive = False
        self._until_close = False
        self._error: BaseException | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: Any = None
        self._closed = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    # what the connection's parser found -----------------------------------------------------

    def _header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def _headers_complete(self, status: int, keep_alive: bool) -> None:
        if 100 <= status < 200:  # an interim answer: the real one follows
            self.reason, self.headers = "", {}
            return
        self.status = status
        self._keep_alive = keep_alive
        self._until_close = (
            "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "").lower()
        )
        encoding = self.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, by header
        elif encoding not in ("", "identity"):
            self._fail(ProtocolError(f"the upstream sent an unsupported content-encoding: {encoding}"))
            return
        self._headers_done = True
        self._wake()

    def _body(self, body: bytes) -> None:
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error as exc:
                self._fail(ProtocolError(f"the upstream's compressed body is corrupt: {exc}"))
                return
            if not body:
                return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > PAUSE_BYTES and not self._paused and self._conn.transport is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def _message_complete(self) -> None:
        if self.status == 0:  # the end of an interim answer
            return
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._chunks.append(rest)
        self.complete = True
        self._wake()

    # the connection's side -----------------------------------------------------------------

    def _lost(self, exc: Exception | None) -> None:
        if self._headers_done and self._until_close and exc is None:
            self._message_complete()  # a body delimited by the end of the connection
            self._keep_alive = False
        elif not self._received:
            self._fail(_ClosedBeforeAnswer())
        else:
            self._fail(exc or ConnectionResetError("the upstream closed the connection mid-answer"))

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if self._timeout is None else loop.call_later(self._timeout, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self._error is not None:
            raise self._error

    async def _wait_headers(self) -> None:
        while not self._headers_done:
            await self._wait()

    # the caller's side ---------------------------------------------------------------------

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (decompressed), until the end of the response."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= PAUSE_BYTES // 4:
                    self._paused = False
                    if self._conn.transport is not None:
                        self._conn.transport.resume_reading()
                yield chunk
            if self.complete:
                return
            await self._wait()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, or its first ``limit`` bytes (enough for an error message)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_chunks():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        data = b"".join(parts)
        return data if limit is None else data[:limit]

    def close(self) -> None:
        """Pools the connection if the response was read to its end, else drops it."""
        if self._closed:
            return
        self._closed = True
        if self.complete and self._error is None and not self._chunks:
            self._conn.done(self)
        else:
            self._conn.response = None
            self._conn.abort()

    async def aclose(self) -> None:
        """:meth:`close`, as the transport seam spells it."""
        self.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
