"""Connection limits for the HTTP server: what uvicorn does not enforce by itself.

uvicorn (0.54, httptools) closes a connection only when it has been idle *between* requests;
a connection that never sends anything, or sends its request head or body a byte at a time, is
held forever, and a request head is buffered without a size limit. This protocol adds, per
connection (the rules of Apache's mod_reqtimeout, which reverse proxies mirror):

- the request head must arrive within ``header_timeout_s`` of the connection (or of its first
  byte on a kept-alive connection), else 408 and close;
- a head larger than ``max_header_bytes`` → 431 and close, before more of it is buffered;
- a body must keep up: ``body_timeout_s`` from the end of the head, extended by one second per
  ``body_min_rate`` bytes received (time the server itself holds reading paused does not count);
- at most ``max_connections`` open connections per process: the next one gets 503 and is closed;
- idle kept-alive connections close after ``keepalive_timeout_s`` (uvicorn's own timer).

A request whose head and body arrive in one read (nearly all of them) arms no timer at all."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("opentess.connections")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 20.0
    body_min_rate: int = 500  # bytes per second
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1024


def _plain(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(text)).encode() + b"\r\n\r\n" + text
    )


_TOO_MANY = _plain(
    b"503 Service Unavailable", b'{"message":"Too many open connections; retry shortly","error":"Service unavailable"}'
)
_HEAD_TIMEOUT = _plain(
    b"408 Request Timeout", b'{"message":"The request head was not received in time","error":"Request timeout"}'
)
_BODY_TIMEOUT = _plain(
    b"408 Request Timeout", b'{"message":"The request body was not received in time","error":"Request timeout"}'
)
_HEAD_TOO_LARGE = _plain(
    b"431 Request Header Fields Too Large",
    b'{"message":"The request headers are too large","error":"Request header fields too large"}',
)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring.

    Timers are armed only for what is still missing once a read has been parsed: a request
    whose head and body arrive in one read (nearly all of them) arms none."""

    limits = ConnectionLimits()
    # the guard's state in slots: added to the instance's own dict, these grew it to its
    # next size (~770 bytes more per connection, measured with tracemalloc under a flood)
    __slots__ = (
        "_body_received", "_body_started", "_body_timer", "_head_bytes", "_head_timer", "_in_body", "_in_head",
        "_message_ended",
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between two requests, or inside a head
        self._in_body = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_started = 0.0
        self._body_received = 0
        self._message_ended = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            # the refusal lingers (see ``refuse``) with a protocol of its own that holds
            # nothing (this one hears no more of the connection): under a flood, thousands of
            # refused connections would otherwise each keep a whole HTTP protocol (~4 KB) for
            # that second
            transport.set_protocol(_Refused())
            refuse(transport, len(self.connections))
            return
        super().connection_made(transport)
        # a connection that sends nothing at all is closed after header_timeout_s
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._message_ended = False
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_head:
            if not self._message_ended:  # the whole read was head (one that began after a body starts next time)
                self._head_bytes += len(data)
                if self._head_bytes > self.limits.max_header_bytes:
                    self._reject(_HEAD_TOO_LARGE)
                    return
                if self._head_timer is None and self._head_bytes:
                    self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)
        elif self._in_body and self._body_timer is None:
            self._body_started = self.loop.time()
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._check_body)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        self._head_bytes = 0
        self._body_received = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_received += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()
        self._in_head = True
        self._in_body = False
        self._head_bytes = 0
        self._message_ended = True

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._reject(_HEAD_TIMEOUT)

    def _check_body(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._in_body:
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the server is not reading: the client is not at fault
            self._body_started = now - self.limits.body_timeout_s / 2
            self._body_received = 0
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s / 2, self._check_body)
            return
        deadline = self._body_started + self.limits.body_timeout_s + self._body_received / self.limits.body_min_rate
        if now < deadline:
            self._body_timer = self.loop.call_later(deadline - now, self._check_body)
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
        else:
            self._reject(_BODY_TIMEOUT)

    def _reject(self, response: bytes) -> None:
        self._cancel_timers()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.write(response)
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None


def refuse(transport: asyncio.Transport, open_connections: int) -> None:
    """Answer a connection past ``max_connections`` 503, then close it. The answer is followed
    by the end of our side of the stream, and whatever the client sends meanwhile is read and
    dropped until it closes its side (or ``LINGER_S`` has passed): closing a socket with unread
    data in it resets the connection, and a client that sent its request before reading (every
    HTTP client) would see the reset instead of the 503. The refusals are logged at most once
    per ``REFUSAL_LOG_S`` with their count, so that a flood of connections is not also a flood
    of log lines."""
    transport.write(_TOO_MANY)
    if transport.can_write_eof():
        transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_S, transport.close)
    else:  # pragma: no cover - TCP transports can
        transport.close()
    _refusals.count += 1
    now = time.monotonic()
    if now - _refusals.logged_at >= REFUSAL_LOG_S:
        log.warning(
            "refused %d connection(s)%s: %d are open (max_connections)",
            _refusals.count,
            "" if _refusals.logged_at == 0.0 else f" in the last {now - _refusals.logged_at:.0f} s",
            open_connections,
        )
        _refusals.count, _refusals.logged_at = 0, now


class _Refused(asyncio.Protocol):
    """The protocol of a refused connection while it lingers: what the client sends is dropped;
    its end closes the connection."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        pass


@dataclass
class _Refusals:
    count: int = 0  # since the last log line
    logged_at: float = 0.0


_refusals = _Refusals()
LINGER_S = 1.0
REFUSAL_LOG_S = 10.0


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, with these limits."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit of open files towards ``wanted`` (up to the hard limit),
    so that ``max_connections`` can be reached before the process runs out of descriptors."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)
