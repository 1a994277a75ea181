"""The bare relay baseline: the unavoidable work of a gateway and nothing else — parse the
request, forward it with one pooled aiohttp session, stream the answer back, insert one SQLite row
before and update it after (2 writes per call). FastAPI + aiohttp + aiosqlite, like opentess.

    python -m bench.relay PORT UPSTREAM_URL DB_PATH
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import aiosqlite
import orjson
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response, StreamingResponse


def build(upstream: str, db_path: str) -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = await aiosqlite.connect(db_path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute(
            "CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, status TEXT, output TEXT, created REAL)"
        )
        await db.commit()
        state["db"] = db
        state["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await state["http"].close()
        await db.close()

    app = FastAPI(lifespan=lifespan)

    async def start(db: aiosqlite.Connection) -> int:
        cur = await db.execute("INSERT INTO calls (status, created) VALUES ('running', ?)", (time.time(),))
        await db.commit()
        return int(cur.lastrowid or 0)

    async def finish(db: aiosqlite.Connection, call_id: int, output: str) -> None:
        await db.execute("UPDATE calls SET status='succeeded', output=? WHERE id=?", (output, call_id))
        await db.commit()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        db: aiosqlite.Connection = state["db"]
        call_id = await start(db)
        resp = await state["http"].post(upstream + "/v1/chat/completions", data=orjson.dumps(body))
        if not body.get("stream"):
            data = await resp.read()
            resp.release()
            content = orjson.loads(data)["choices"][0]["message"]["content"]
            await finish(db, call_id, content)
            return Response(data, media_type="application/json")

        async def relay() -> AsyncIterator[bytes]:
            parts: list[str] = []
            try:
                async for line in resp.content:
                    if line.startswith(b"data: {"):
                        event = orjson.loads(line[6:])
                        for choice in event.get("choices") or ():
                            text = (choice.get("delta") or {}).get("content")
                            if text:
                                parts.append(text)
                    if line.strip():
                        yield line + b"\n"
            finally:
                resp.release()
                await finish(db, call_id, "".join(parts))

        return StreamingResponse(relay(), media_type="text/event-stream")

    return app


if __name__ == "__main__":
    port, upstream, db_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    uvicorn.run(build(upstream, db_path), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)  # fmt: skip
