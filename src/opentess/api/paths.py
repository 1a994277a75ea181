"""Paths as the router sees them, as pure ASGI middleware.

- ``%2F`` in a path is a character of a segment, not a separator: the server decodes it into
  ``/`` in ``scope["path"]``, which would route ``/agents%2F6`` as ``/agents/6``. Such paths name
  nothing here and are answered 404.
- A trailing slash is dropped (``/agents/`` is ``/agents``) instead of redirecting: a redirect
  would be built from the client's Host header."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from opentess.api.errors import render
from opentess.errors import NotFound


class PathGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or b""
            if b"%2f" in raw or b"%2F" in raw:
                await render(scope["path"], NotFound("Not found"))(scope, receive, send)
                return
            path = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)
