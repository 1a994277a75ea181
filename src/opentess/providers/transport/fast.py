"""The default transport: opentess's own HTTP/1.1 client (opentess.providers.http)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from opentess.providers import http
from opentess.providers.transport import Transport, Upstream


class FastTransport(Transport):
    kind = "fast"

    def __init__(self, upstream: Upstream) -> None:
        self._head = http.request_head(upstream.url, upstream.headers)
        # nothing is opened here: the first request connects, in the running loop
        self.origin = http.Origin(
            upstream.url, upstream.connect_timeout, upstream.read_timeout, upstream.max_connections
        )

    def post(self, body: bytes) -> Coroutine[Any, Any, http.Response]:
        # the origin's coroutine itself, not one more around it: this is every call's path
        return self.origin.post(self._head, body)

    async def aclose(self) -> None:
        self.origin.close()
