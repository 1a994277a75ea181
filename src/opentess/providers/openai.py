"""Any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, llama.cpp server, OpenRouter…).

One pooled aiohttp session per base URL. Upstream failures become UpstreamError (502) or
UpstreamTimeout (504) with a message naming the model and the cause; raw tracebacks never leave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from opentess.errors import UpstreamError, UpstreamTimeout
from opentess.providers.base import (
    ChatRequest,
    Completion,
    Provider,
    estimate_tokens,
    messages_text,
    register,
)
from opentess.settings import ModelConfig, Settings

_SESSIONS: dict[tuple[int, str], aiohttp.ClientSession] = {}


def _session_for(base_url: str, settings: Settings) -> aiohttp.ClientSession:
    """The shared session of one upstream within the running event loop."""
    loop = asyncio.get_running_loop()
    key = (id(loop), base_url)
    session = _SESSIONS.get(key)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.upstream_connect_timeout_s,
                sock_read=settings.upstream_read_timeout_s,
            ),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )
        _SESSIONS[key] = session
    return session


async def close_sessions() -> None:
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _SESSIONS if k[0] == loop_id]:
        await _SESSIONS.pop(key).close()


@register("openai")
class OpenAIProvider(Provider):
    def __init__(self, name: str, config: ModelConfig, settings: Settings) -> None:
        super().__init__(name, config, settings)
        assert config.base_url is not None  # checked by ModelConfig
        self._base = config.base_url.rstrip("/")
        self._url = self._base + "/chat/completions"
        self._upstream_model = config.upstream_model or name
        self._headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        key = config.resolved_api_key()
        if key:
            self._headers["Authorization"] = f"Bearer {key}"

    def _body(self, request: ChatRequest, stream: bool) -> bytes:
        body: dict[str, Any] = {"model": self._upstream_model, "messages": request.messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        for key in ("temperature", "max_tokens", "top_p", "seed", "presence_penalty", "frequency_penalty"):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        if request.stop:
            body["stop"] = request.stop
        return orjson.dumps(body)

    async def _post(self, request: ChatRequest, stream: bool) -> aiohttp.ClientResponse:
        session = _session_for(self._base, self.settings)
        try:
            resp = await session.post(self._url, data=self._body(request, stream), headers=self._headers)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"model {self.name}: the upstream did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"model {self.name}: cannot reach the upstream at {self._base}: {exc}") from exc
        if resp.status >= 400:
            try:
                detail = await self._error_detail(resp)
            finally:
                resp.close()
            raise UpstreamError(f"model {self.name}: the upstream answered HTTP {resp.status}: {detail}")
        return resp

    @staticmethod
    async def _error_detail(resp: aiohttp.ClientResponse) -> str:
        try:
            raw = await resp.content.read(4096)
        except (aiohttp.ClientError, TimeoutError):
            return resp.reason or "no detail"
        try:
            data = orjson.loads(raw)
            err = data.get("error") if isinstance(data, dict) else None
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])
            if isinstance(err, str):
                return err
        except orjson.JSONDecodeError:
            pass
        text = raw.decode("utf-8", "replace").strip()
        return text[:500] or (resp.reason or "no detail")

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Completion]:
        resp = await self._post(request, stream=True)
        try:
            if not resp.content_type.startswith("text/event-stream"):
                # an upstream that ignores "stream": answer with the whole completion at once
                text, final = self._parse_completion(await self._read_json(resp), request)
                if text:
                    yield text
                yield final
                return
            produced: list[str] = []
            finish: str | None = None
            usage: dict[str, Any] | None = None
            done = False
            try:
                async for payload in _sse_data(resp):
                    if payload == b"[DONE]":
                        done = True
                        break
                    try:
                        event = orjson.loads(payload)
                    except orjson.JSONDecodeError as exc:
                        raise UpstreamError(
                            f"model {self.name}: the upstream sent a malformed stream event: {payload[:200]!r}"
                        ) from exc
                    if not isinstance(event, dict):
                        raise UpstreamError(f"model {self.name}: the upstream sent a malformed stream event")
                    if "error" in event:
                        raise UpstreamError(f"model {self.name}: the upstream failed mid-stream: {_message(event)}")
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or ():
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if content:
                            produced.append(content)
                            yield content
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
            except TimeoutError as exc:
                raise UpstreamTimeout(f"model {self.name}: the upstream stopped sending for too long") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"model {self.name}: the upstream connection failed: {exc}") from exc
            if not done and finish is None:
                raise UpstreamError(f"model {self.name}: the upstream closed the stream before finishing")
            yield _completion(usage, finish, request, "".join(produced))
        finally:
            # closing (not releasing) drops the connection, so the upstream stops generating
            resp.close()

    async def complete(self, request: ChatRequest) -> tuple[str, Completion]:
        resp = await self._post(request, stream=False)
        try:
            return self._parse_completion(await self._read_json(resp), request)
        finally:
            resp.close()

    async def _read_json(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            raw = await resp.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"model {self.name}: the upstream did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"model {self.name}: the upstream connection failed: {exc}") from exc
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"model {self.name}: the upstream answered with invalid JSON") from exc
        if not isinstance(data, dict):
            raise UpstreamError(f"model {self.name}: the upstream answered with unexpected JSON")
        return data

    def _parse_completion(self, data: dict[str, Any], request: ChatRequest) -> tuple[str, Completion]:
        if "error" in data:
            raise UpstreamError(f"model {self.name}: the upstream failed: {_message(data)}")
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"model {self.name}: the upstream answer has no choices[0].message") from exc
        return text, _completion(data.get("usage"), choice.get("finish_reason"), request, text)


def _message(event: dict[str, Any]) -> str:
    err = event.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


def _completion(usage: Any, finish: str | None, request: ChatRequest, text: str) -> Completion:
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        prompt, completion = usage["prompt_tokens"], int(usage.get("completion_tokens") or 0)
    else:
        prompt, completion = estimate_tokens(messages_text(request.messages)), estimate_tokens(text)
    return Completion(prompt, completion, "length" if finish == "length" else "stop")


async def _sse_data(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The ``data`` payloads of a server-sent event stream (multi-line data joined by newlines)."""
    data: list[bytes] = []
    async for raw in resp.content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
            continue
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        # comments (":"), "event:", "id:" and "retry:" lines carry nothing we use
    if data:
        yield b"\n".join(data)
