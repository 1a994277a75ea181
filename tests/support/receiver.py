"""A real webhook receiver for tests: an HTTP server (aiohttp, in a thread of its own) on
127.0.0.1 that records every request it gets and answers as told — a status per request in
order (``answers``: a status, or ``"hang"`` for no answer at all; then 200). It can be started on a port
chosen beforehand, so a test can register its URL while it is still down."""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.processes import free_port


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str  # the raw query string
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls  # serve https with this context
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/hook"
        self.requests: list[Received] = []
        self.answers: list[int | str] = []  # for the next requests, in order: a status or "hang"; then 200
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def start(self) -> Receiver:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.tls).start()

    def stop(self) -> None:
        """Stop listening (the thread stays, so that ``start`` can listen again)."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
            self._runner = None

    async def _stop(self) -> None:
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        assert self._runner is not None
        await self._runner.cleanup()

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            self.requests.append(
                Received(request.method, request.path, request.rel_url.raw_query_string, dict(request.headers), body)
            )
            answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":
            await asyncio.sleep(3600)
        status = int(answer)
        return web.json_response({"ok": status < 300}, status=status)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
