"""Any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, llama.cpp server, OpenRouter…).

Requests go through opentess.providers.http (kept-alive connections pooled per origin). Upstream
failures become UpstreamError (502) or UpstreamTimeout (504) with a message naming the model and
the kind of failure; the upstream's address and what it said are logged, never sent to the caller
(they can name internal hosts, or echo a key)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from opentess.errors import UpstreamError, UpstreamTimeout
from opentess.providers import http
from opentess.providers.base import (
    ChatRequest,
    Completion,
    Provider,
    estimate_tokens,
    messages_text,
    register,
)
from opentess.settings import ModelConfig, Settings

log = logging.getLogger("opentess.providers.openai")


async def close_sessions() -> None:
    """Drops the pooled upstream connections of the running event loop."""
    http.close_origins()


@register("openai")
class OpenAIProvider(Provider):
    def __init__(self, name: str, config: ModelConfig, settings: Settings) -> None:
        super().__init__(name, config, settings)
        assert config.base_url is not None  # checked by ModelConfig
        self._base = config.base_url.rstrip("/")
        self._upstream_model = config.upstream_model or name
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        key = config.resolved_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._head = http.request_head(self._base + "/chat/completions", headers)

    def _body(self, request: ChatRequest, stream: bool) -> bytes:
        body: dict[str, Any] = {"model": self._upstream_model, "messages": request.messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        body.update(request.sampling.given())
        return orjson.dumps(body)

    async def _post(self, request: ChatRequest, stream: bool) -> http.Response:
        settings = self.settings
        origin = http.origin_for(self._base, settings.upstream_connect_timeout_s, settings.upstream_read_timeout_s)
        try:
            resp = await origin.post(self._head, self._body(request, stream))
        except TimeoutError as exc:
            raise UpstreamTimeout(f"model {self.name}: the upstream did not answer in time") from exc
        except OSError as exc:
            log.warning("model %s: cannot reach the upstream at %s: %s", self.name, self._base, exc)
            raise UpstreamError(f"model {self.name}: cannot reach the upstream") from exc
        if resp.status >= 400:
            try:
                detail = await self._error_detail(resp)
            finally:
                resp.close()
            log.warning("model %s: the upstream at %s answered HTTP %s: %s", self.name, self._base, resp.status, detail)
            raise UpstreamError(f"model {self.name}: the upstream answered HTTP {resp.status}")
        return resp

    @staticmethod
    async def _error_detail(resp: http.Response) -> str:
        try:
            raw = await resp.read(4096)
        except OSError:
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
                        log.warning("model %s: malformed stream event from the upstream: %r", self.name, payload[:200])
                        raise UpstreamError(f"model {self.name}: the upstream sent a malformed stream event") from exc
                    if not isinstance(event, dict):
                        raise UpstreamError(f"model {self.name}: the upstream sent a malformed stream event")
                    if "error" in event:
                        log.warning("model %s: the upstream failed mid-stream: %s", self.name, _message(event))
                        raise UpstreamError(f"model {self.name}: the upstream failed mid-stream")
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
            except OSError as exc:
                log.warning("model %s: the upstream connection failed: %s", self.name, exc)
                raise UpstreamError(f"model {self.name}: the upstream connection failed") from exc
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

    async def _read_json(self, resp: http.Response) -> dict[str, Any]:
        try:
            raw = await resp.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"model {self.name}: the upstream did not answer in time") from exc
        except OSError as exc:
            log.warning("model %s: the upstream connection failed: %s", self.name, exc)
            raise UpstreamError(f"model {self.name}: the upstream connection failed") from exc
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"model {self.name}: the upstream answered with invalid JSON") from exc
        if not isinstance(data, dict):
            raise UpstreamError(f"model {self.name}: the upstream answered with unexpected JSON")
        return data

    def _parse_completion(self, data: dict[str, Any], request: ChatRequest) -> tuple[str, Completion]:
        if "error" in data:
            log.warning("model %s: the upstream failed: %s", self.name, _message(data))
            raise UpstreamError(f"model {self.name}: the upstream answered with an error")
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


async def _sse_data(resp: http.Response) -> AsyncIterator[bytes]:
    """The ``data`` payloads of a server-sent event stream (multi-line data joined by newlines).
    Lines end with LF, CRLF or CR; a line split across reads is held until its end arrives."""
    data: list[bytes] = []
    rest = b""
    async for chunk in resp.iter_chunks():
        if rest:
            chunk = rest + chunk
        held = b""
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):  # perhaps the first half of a CRLF
                chunk, held = chunk[:-1], b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        rest = lines.pop() + held
        for line in lines:
            if not line:
                if data:
                    yield b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                data.append(_data_value(line))
            # comments (":"), "event:", "id:" and "retry:" lines carry nothing we use
    if rest.startswith(b"data:"):  # a last line without its end
        data.append(_data_value(rest))
    if data:
        yield b"\n".join(data)


def _data_value(line: bytes) -> bytes:
    """The value of a ``data:`` line, without the one space that may follow the colon."""
    value = line[5:]
    return value[1:] if value.startswith(b" ") else value
