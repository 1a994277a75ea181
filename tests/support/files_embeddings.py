"""A real OpenAI-compatible embeddings server for tests (aiohttp, in a thread). Its vectors are
deterministic bags of words hashed into 256 dimensions, with a few synonyms sharing a word's
dimension — so "automobile" is near "car" although no full-text index can see it."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from typing import Any

from aiohttp import web

DIMENSIONS = 256
SYNONYMS = {"automobile": "car", "vehicle": "car", "cost": "price", "costs": "price", "priced": "price"}
# words that carry no meaning here (a real model weighs them little too)
STOP = {"the", "a", "an", "is", "at", "of", "to", "how", "much", "does", "do", "what", "which", "in", "on"}
_WORD = re.compile(r"[a-z0-9]+")


def vector(text: str) -> list[float]:
    out = [0.0] * DIMENSIONS
    for word in _WORD.findall(text.lower()):
        if word in STOP:
            continue
        word = SYNONYMS.get(word, word)
        out[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMENSIONS] += 1.0
    return out


class FakeEmbeddings:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail = False
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> FakeEmbeddings:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.fail:
            return web.json_response({"error": {"message": "down"}}, status=503)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": vector(text)} for i, text in enumerate(inputs)]
        return web.json_response({"object": "list", "data": data, "model": body.get("model")})

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
