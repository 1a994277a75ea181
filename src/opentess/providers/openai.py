"""Any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, llama.cpp server, OpenRouter…).

Requests go through the provider's own transport (opentess.providers.transport: the fast client,
or httpx where a proxy or custom TLS applies), opened on the first call and closed by
``aclose``. Upstream failures become UpstreamError (502) or UpstreamTimeout (504) with a message
naming the model and the kind of failure, the same whatever the transport; the upstream's address
and what it said are logged, never sent to the caller (they can name internal hosts, or echo a
key)."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import Field, field_validator, model_validator

from opentess.errors import UpstreamError, UpstreamTimeout
from opentess.providers.base import (
    ChatRequest,
    Completion,
    Provider,
    ToolCall,
    estimate_tokens,
    messages_text,
    register,
)
from opentess.providers.transport import TransportKind, Upstream, UpstreamResponse, make_transport
from opentess.settings import ModelConfig, ProviderSettings, Settings

log = logging.getLogger("opentess.providers.openai")


class OpenAISettings(ProviderSettings):
    """An OpenAI-compatible model's keys: where its API is, how to reach it, how to sign in."""

    base_url: str
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    # the model name sent upstream; None: the table's name
    upstream_model: str | None = None
    # auto: httpx where a proxy applies or custom TLS is set, else the fast client
    transport: TransportKind = "auto"
    # a proxy for this model only; None: HTTP_PROXY/HTTPS_PROXY/ALL_PROXY/NO_PROXY decide
    proxy: str | None = None
    # PEM files: the CAs to verify the upstream with (instead of the system's), a client certificate
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None  # None: the key is in client_cert's file
    max_connections: int = Field(default=64, ge=1)

    @field_validator("base_url", "proxy")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"must be an http:// or https:// URL with a host, not {value!r}")
        return value

    @model_validator(mode="after")
    def _check_tls_and_transport(self) -> OpenAISettings:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key: given without client_cert")
        if self.transport == "fast" and (self.proxy or self.ca_bundle or self.client_cert):
            raise ValueError("transport: 'fast' takes no proxy, ca_bundle or client_cert; use 'auto' or 'httpx'")
        self.ssl_context()  # the files are read now, so that a bad one is refused at load
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for a custom CA bundle or client certificate; None: the system's."""
        if self.ca_bundle is None and self.client_cert is None:
            return None
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise ValueError(f"ca_bundle: no file at {self.ca_bundle!r}")
        try:
            context = ssl.create_default_context(cafile=self.ca_bundle)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"ca_bundle: cannot load {self.ca_bundle!r}: {exc}") from exc
        if self.client_cert is not None:
            try:
                # an encrypted key would make OpenSSL prompt on the terminal: refused instead
                context.load_cert_chain(self.client_cert, self.client_key, password=_no_password)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(f"client_cert: cannot load {self.client_cert!r}: {exc}") from exc
        return context

    def resolved_api_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None


def _no_password() -> bytes:
    raise ValueError("the client key is encrypted; give an unencrypted key file")


@register("openai")
class OpenAIProvider(Provider):
    settings_model = OpenAISettings

    def __init__(self, name: str, config: ModelConfig, settings: Settings) -> None:
        super().__init__(name, config, settings)
        options = config.options_as(OpenAISettings)
        self._base = options.base_url.rstrip("/")
        self._upstream_model = options.upstream_model or name
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        key = options.resolved_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        upstream = Upstream(
            url=self._base + "/chat/completions",
            headers=headers,
            connect_timeout=settings.upstream_connect_timeout_s,
            read_timeout=settings.upstream_read_timeout_s,
            max_connections=options.max_connections,
            proxy=options.proxy,
            ssl_context=options.ssl_context(),
        )
        # made now, opened at the first call (in the running loop), closed by aclose
        self.transport = make_transport(upstream, options.transport)

    async def aclose(self) -> None:
        await self.transport.aclose()

    def _body(self, request: ChatRequest, stream: bool) -> bytes:
        body: dict[str, Any] = {"model": self._upstream_model, "messages": request.messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        body.update(request.sampling.given())
        if request.tools:
            body["tools"] = [tool.openai() for tool in request.tools]
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        return orjson.dumps(body)

    async def _post(self, request: ChatRequest, stream: bool) -> UpstreamResponse:
        try:
            resp = await self.transport.post(self._body(request, stream))
        except TimeoutError as exc:
            raise UpstreamTimeout(f"model {self.name}: the upstream did not answer in time") from exc
        except OSError as exc:
            log.warning("model %s: cannot reach the upstream at %s: %s", self.name, self._base, exc)
            raise UpstreamError(f"model {self.name}: cannot reach the upstream") from exc
        if resp.status >= 400:
            try:
                detail = await self._error_detail(resp)
            finally:
                await resp.aclose()
            log.warning("model %s: the upstream at %s answered HTTP %s: %s", self.name, self._base, resp.status, detail)
            raise UpstreamError(f"model {self.name}: the upstream answered HTTP {resp.status}")
        return resp

    @staticmethod
    async def _error_detail(resp: UpstreamResponse) -> str:
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
        request = self.with_defaults(request)
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
            calls: dict[int, dict[str, str]] = {}  # tool calls arrive in pieces, by index
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
                        for piece in delta.get("tool_calls") or ():
                            _merge_call(calls, piece)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
            except TimeoutError as exc:
                raise UpstreamTimeout(f"model {self.name}: the upstream stopped sending for too long") from exc
            except OSError as exc:
                log.warning("model %s: the upstream connection failed: %s", self.name, exc)
                raise UpstreamError(f"model {self.name}: the upstream connection failed") from exc
            if not done and finish is None:
                raise UpstreamError(f"model {self.name}: the upstream closed the stream before finishing")
            yield _completion(usage, finish, request, "".join(produced), _calls(calls))
        finally:
            # a response not read to its end drops its connection, so the upstream stops generating
            await resp.aclose()

    async def complete(self, request: ChatRequest) -> tuple[str, Completion]:
        request = self.with_defaults(request)
        resp = await self._post(request, stream=False)
        try:
            return self._parse_completion(await self._read_json(resp), request)
        finally:
            await resp.aclose()

    async def _read_json(self, resp: UpstreamResponse) -> dict[str, Any]:
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
            message = choice["message"]
            text = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"model {self.name}: the upstream answer has no choices[0].message") from exc
        calls: dict[int, dict[str, str]] = {}
        for index, call in enumerate(message.get("tool_calls") or ()):
            _merge_call(calls, {**call, "index": index} if isinstance(call, dict) else {})
        return text, _completion(data.get("usage"), choice.get("finish_reason"), request, text, _calls(calls))


def _message(event: dict[str, Any]) -> str:
    err = event.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


def _completion(
    usage: Any, finish: str | None, request: ChatRequest, text: str, calls: tuple[ToolCall, ...] = ()
) -> Completion:
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        prompt, completion = usage["prompt_tokens"], int(usage.get("completion_tokens") or 0)
    else:
        prompt, completion = estimate_tokens(messages_text(request.messages)), estimate_tokens(text)
    reason = "tool_calls" if calls else "length" if finish == "length" else "stop"
    return Completion(prompt, completion, reason, calls)


def _merge_call(calls: dict[int, dict[str, str]], piece: Any) -> None:
    """Add a piece of a streamed tool call (OpenAI sends the id and name first, then the
    arguments in fragments, each with the call's index)."""
    if not isinstance(piece, dict):
        return
    index = piece.get("index", 0)
    call = calls.setdefault(index if isinstance(index, int) else 0, {"id": "", "name": "", "arguments": ""})
    if piece.get("id"):
        call["id"] = str(piece["id"])
    function = piece.get("function") or {}
    if isinstance(function, dict):
        if function.get("name"):
            call["name"] = str(function["name"])
        if function.get("arguments"):
            call["arguments"] += str(function["arguments"])


def _calls(calls: dict[int, dict[str, str]]) -> tuple[ToolCall, ...]:
    ordered = sorted(calls.items())
    return tuple(ToolCall(c["id"] or f"call_{i}", c["name"], c["arguments"] or "{}") for i, c in ordered if c["name"])


async def _sse_data(resp: UpstreamResponse) -> AsyncIterator[bytes]:
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
