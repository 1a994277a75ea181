"""Request body size limit, as pure ASGI middleware (no BaseHTTPMiddleware on any route)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opentess.api.errors import render
from opentess.errors import PayloadTooLarge


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is larger than the limit of {self.max_bytes} bytes.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    await render(scope["path"], self._error())(scope, receive, send)
                    return
                # the server frames the body by this length: it cannot grow past it
                await self.app(scope, receive, send)
                return
        received = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self._error()
            return message

        await self.app(scope, counted, send)
