"""Per-request observability as pure ASGI middleware, the outermost layer: the X-Request-Id
header (accepted or made), one structured log line per request, the request metrics, and the
error boundary — an exception no handler took is logged once with its cause and answered 500 in
the route's format with ``Connection: close`` (or, once the answer has begun, the connection is
closed), and goes no further. One layer for all of it: every layer wraps ``send`` once more for
every message of every request."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opentess import metrics
from opentess.api.errors import ANSWERED, note_failure, render_unexpected

log = logging.getLogger("opentess.access")
log_boundary = logging.getLogger("opentess.api")
_PROCESS = os.urandom(8).hex()
_counter = itertools.count(1)


def next_request_id() -> str:
    """32 hex digits, unique across processes: a random per-process half and a counter (a uuid4
    per request costs a getrandom call and an object)."""
    return f"{_PROCESS}{next(_counter):016x}"


_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# nginx's status for a request whose client closed the connection before it was answered; it is
# recorded and logged, never sent (there is no one to send it to)
CLIENT_CLOSED = 499


class Observability:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # the metric children of each (route, method, status): one lookup per request
        self._metrics: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_ID.match(candidate):
                    request_id = candidate
                break
        if not request_id:
            request_id = next_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        status = 0  # until an answer starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                state[ANSWERED] = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # the client left while its body was being read (or the connection guard cut a body
            # sent too slowly, after answering 408): not a fault of ours, and nobody to answer
            status = status or CLIENT_CLOSED
        except Exception as exc:
            log_boundary.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
            note_failure(scope, exc)
            if not status:  # nothing answered yet (``status`` is set when an answer starts)
                await render_unexpected(scope["path"])(scope, receive, send_with_id)
            # else the answer is incomplete: the server closes the connection when we return
        finally:
            self._record(scope, state, request_id, status or 500, time.perf_counter() - started)

    def _record(self, scope: Scope, state: dict[str, Any], request_id: str, status: int, duration: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
        key = (template, scope["method"], status)
        found = self._metrics.get(key)
        if found is None:
            found = self._metrics[key] = (
                metrics.child(metrics.REQUESTS, template, scope["method"], str(status)),
                metrics.child(metrics.REQUEST_SECONDS, template),
                metrics.child(metrics.OVERHEAD_SECONDS, template),
            )
        requests, seconds, overhead = found
        requests.inc()
        seconds.observe(duration)
        execution = state.get("execution")
        model_seconds = execution.model_seconds if execution is not None else 0.0
        overhead.observe(max(0.0, duration - model_seconds))
        level = logging.WARNING if status >= 500 else logging.INFO  # a failed answer stands out
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            "request",
            extra={
                "request_id": request_id,
                "method": scope["method"],
                "route": template,
                "path": scope["path"],
                "status": status,
                "duration_ms": round(duration * 1000, 3),
                "execution_id": execution.id if execution is not None else None,
                "error": state.get("error"),
            },
        )
