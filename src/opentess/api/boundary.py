"""What a request must be before it reaches a route, as one pure ASGI middleware.

- Its body is at most ``max_body_bytes`` (413 in the route's wire format): refused at once from
  its Content-Length, or as soon as a body without one grows past it. ``limit_for(method, path)``
  may give a route a limit of its own (the file uploads: ``OPENTESS_MAX_FILE_BYTES``); such
  routes stream their bodies instead of reading them whole.
- ``%2F`` in its path is a character of a segment, not a separator: the server decodes it into
  ``/`` in ``scope["path"]``, which would route ``/agents%2F6`` as ``/agents/6``. Such paths name
  nothing here and are answered 404.
- A trailing slash is dropped (``/agents/`` is ``/agents``) instead of redirecting: a redirect
  would be built from the client's Host header.

One layer for all three: a request crosses every layer again at each of its awaits."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opentess.api.errors import render
from opentess.errors import NotFound, PayloadTooLarge


class RequestBoundary:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, limit_for: Callable[[str, str], int | None] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_body_bytes
        self.limit_for = limit_for

    @staticmethod
    def _too_large(limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or b""
        if b"%2f" in raw or b"%2F" in raw:
            await render(scope["path"], NotFound("Not found"))(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path[-1] == "/":
            scope = {**scope, "path": path.rstrip("/") or "/"}
        limit = self.max_bytes
        if self.limit_for is not None:
            root = scope.get("root_path") or ""
            route = scope["path"][len(root) :] if root and scope["path"].startswith(root) else scope["path"]
            limit = self.limit_for(scope["method"], route) or limit
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > limit
                except ValueError:
                    too_large = False
                if too_large:
                    await render(scope["path"], self._too_large(limit))(scope, receive, send)
                    return
                # the server frames the body by this length: it cannot grow past it
                await self.app(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self._too_large(limit)
            return message

        await self.app(scope, counted, send)
