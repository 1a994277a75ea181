"""A pure-ASGI server-sent-events response.

Why not Starlette's StreamingResponse: under ASGI 2.4 servers it notices a disconnect only when a
write fails, so a run waiting on a slow model keeps generating for a client that is gone. This
response listens for ``http.disconnect`` while streaming and cancels the producer at once, flushes
every event as it is produced, and sends an SSE comment as keep-alive while the model is silent.

Headers wait for the first event (or the first keep-alive), so that a failure before any output —
upstream refused, validation in the provider — is still an ordinary HTTP error response (contract §3).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from opentess import metrics

T = TypeVar("T")
KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]

# Builds the error response for an exception raised before the first event.
ErrorResponder = Callable[[BaseException], Response | None]


class EventStreamResponse(Response):
    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        keepalive_s: float,
        on_early_error: ErrorResponder,
        on_late_error: Callable[[BaseException], bytes | None],
        headers: dict[str, str] | None = None,
        keepalive_throughout: bool = False,
    ) -> None:
        self.events = events
        self.keepalive_s = keepalive_s
        # keep-alives between any two events, not only before the first (runs whose tools
        # may keep the stream quiet mid-answer; a timed wait per event costs the hot path)
        self.keepalive_throughout = keepalive_throughout
        self.on_early_error = on_early_error
        self.on_late_error = on_late_error
        self.status_code = 200
        self.background = None
        self.extra_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        producer = asyncio.ensure_future(self._produce(send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        metrics.ACTIVE_STREAMS.inc()
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            metrics.ACTIVE_STREAMS.dec()
            if not producer.done():
                producer.cancel()  # client gone: stop the run (it stores itself as cancelled)
            watcher.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)
        if not producer.cancelled() and producer.exception() is not None:
            raise producer.exception()  # type: ignore[misc]

    async def _start(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self.extra_headers})

    async def _produce(self, send: Send) -> None:
        events = self.events
        started = False
        try:
            # Until the first event: wait in keep-alive sized slices.
            first: bytes | None = None
            pending: asyncio.Future[bytes] = asyncio.ensure_future(events.__anext__())
            try:
                while True:
                    done, _ = await asyncio.wait({pending}, timeout=self.keepalive_s)
                    if done:
                        first = pending.result()
                        break
                    if not started:
                        await self._start(send)
                        started = True
                    await _send_body(send, KEEPALIVE)
            except StopAsyncIteration:
                first = None
            finally:
                if not pending.done():
                    # let the generator see the cancellation before anything closes it
                    pending.cancel()
                    await asyncio.wait({pending})
            if not started:
                await self._start(send)
                started = True
            if first is not None:
                await _send_body(send, first)
                if self.keepalive_throughout:
                    await self._paced(events, send)
                else:
                    async for chunk in events:
                        await _send_body(send, chunk)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not started:
                response = self.on_early_error(exc)
                if response is None:
                    raise
                await response(_NO_SCOPE, _no_receive, send)
                return
            tail = self.on_late_error(exc)
            if tail is None:
                raise
            await _send_body(send, tail)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _paced(self, events: AsyncIterator[bytes], send: Send) -> None:
        """Every event, with a keep-alive whenever none came for ``keepalive_s``."""
        while True:
            pending: asyncio.Future[bytes] = asyncio.ensure_future(events.__anext__())
            try:
                while True:
                    done, _ = await asyncio.wait({pending}, timeout=self.keepalive_s)
                    if done:
                        break
                    await _send_body(send, KEEPALIVE)
                chunk = pending.result()
            except StopAsyncIteration:
                return
            finally:
                if not pending.done():
                    pending.cancel()
                    await asyncio.wait({pending})
            await _send_body(send, chunk)


_NO_SCOPE: dict[str, Any] = {"type": "http"}


async def _no_receive() -> dict[str, Any]:  # pragma: no cover - plain responses never receive
    return {"type": "http.disconnect"}


async def _send_body(send: Callable[[dict[str, Any]], Awaitable[None]], data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T | None:
    """Await ``work`` (a non-streaming run) but cancel it if the client goes away first, so an
    abandoned request does not keep a model busy; None then. Call after the body was read.

    The work runs in the calling task; one watcher task cancels it on ``http.disconnect``."""
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _wait_disconnect(receive)
        gone = True
        current.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        current.uncancel()
        return None
    finally:
        watcher.cancel()
