"""A real OpenAI-compatible HTTP server for tests, run by aiohttp in a thread of its own.

It records what it receives and behaves as ``mode`` says: "ok" (stream or JSON answer), "error500",
"malformed" (bad SSE), "hang" (no answer), "hang_mid" (one chunk, then silence), "no_done"
(closes the stream early). ``delay`` pauses between chunks; ``disconnected`` is set when a client
goes away mid-stream.

``responder`` (a function of the request body) makes it answer what the function returns
instead: a string (the answer's text) or a dict with ``content`` and/or ``tool_calls`` (a list
of ``(name, arguments)``), sent as OpenAI's API sends function calls — in one message, or
streamed as pieces (id and name first, the arguments in fragments) ending with
``finish_reason: "tool_calls"``."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.mode = "ok"
        self.chunks = ["Hello", " from", " the", " upstream", "."]
        self.delay = 0.0
        self.first_delay = 0.0
        self.chunk_sent_at: list[float] = []
        self.disconnected = threading.Event()
        self.responder: Callable[[dict[str, Any]], str | dict[str, Any]] | None = None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def reset(self) -> None:
        self.requests.clear()
        self.chunk_sent_at.clear()
        self.mode = "ok"
        self.delay = 0.0
        self.first_delay = 0.0
        self.chunks = ["Hello", " from", " the", " upstream", "."]
        self.disconnected.clear()
        self.responder = None

    def start(self) -> FakeUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        # handlers parked in "hang" modes would hold cleanup for their whole sleep
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]["body"]

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": 1,
            "model": body.get("model"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(self.chunks)}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }

    @staticmethod
    def _event(payload: Any) -> bytes:
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def _chunk(self, text: str | None, finish: str | None = None) -> bytes:
        delta = {} if text is None else {"content": text}
        return self._event(
            {
                "id": "chatcmpl-upstream",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-upstream",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"body": body, "headers": dict(request.headers)})
        mode = self.mode
        if mode == "error500":
            return web.json_response({"error": {"message": "upstream exploded", "type": "server_error"}}, status=500)
        if mode == "hang":
            await asyncio.sleep(3600)
        if self.responder is not None:
            return await self._respond(request, body, self.responder(body))
        if not body.get("stream"):
            return web.json_response(self._completion(body))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            if mode == "malformed":
                await resp.write(b"data: {this is not json\n\n")
                return resp
            if self.first_delay:
                await asyncio.sleep(self.first_delay)
            for i, text in enumerate(self.chunks):
                if self.delay and i:
                    await asyncio.sleep(self.delay)
                await resp.write(self._chunk(text))
                self.chunk_sent_at.append(time.monotonic())
                if mode == "hang_mid":
                    await asyncio.sleep(3600)
                if mode == "no_done" and i == 1:
                    return resp
            await resp.write(self._chunk(None, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(
                    self._event(
                        {
                            "id": "chatcmpl-upstream",
                            "object": "chat.completion.chunk",
                            "choices": [],
                            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                        }
                    )
                )
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return resp

    async def _respond(
        self, request: web.Request, body: dict[str, Any], reply: str | dict[str, Any]
    ) -> web.StreamResponse:
        if isinstance(reply, str):
            reply = {"content": reply}
        content = reply.get("content")
        calls = [
            {
                "id": f"call_{len(self.requests)}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(reply.get("tool_calls") or [])
        ]
        finish = "tool_calls" if calls else "stop"
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = calls
            return web.json_response(
                {
                    "id": "chatcmpl-upstream",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return self._event(
                {
                    "id": "chatcmpl-upstream",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "gpt-upstream",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                }
            )

        await resp.write(chunk({"role": "assistant", "content": "" if content else None}))
        for j, word in enumerate(content.split(" ") if content else ()):
            await resp.write(chunk({"content": word if j == 0 else " " + word}))
        for i, call in enumerate(calls):
            arguments = call["function"]["arguments"]
            head = {
                "index": i,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            await resp.write(chunk({"tool_calls": [head]}))
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                await resp.write(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
        await resp.write(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(
                self._event(
                    {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "choices": [], "usage": usage}
                )
            )
        await resp.write(b"data: [DONE]\n\n")
        return resp
