"""The transport for what the fast client does not do: proxies, a custom CA bundle, a client
certificate. httpx's own failures become the seam's OSError and TimeoutError."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx

from opentess.providers import http
from opentess.providers.transport import Transport, Upstream


class HttpxTransport(Transport):
    kind = "httpx"

    def __init__(self, upstream: Upstream, proxy: str | None) -> None:
        self.upstream = upstream
        self.proxy = proxy
        self._client: httpx.AsyncClient | None = None

    def _open(self) -> httpx.AsyncClient:
        # opened on first use, in the loop that runs the requests (httpx's pool belongs to one)
        up = self.upstream
        read = up.read_timeout
        self._client = httpx.AsyncClient(
            proxy=self.proxy,
            # our own context rather than httpx's default (certifi's bundle): the system's
            # certificates, as the fast transport uses, unless a CA bundle was configured
            verify=up.ssl_context or ssl.create_default_context(),
            # the proxy was already chosen, from the environment too (make_transport): httpx must
            # not read it again, nor SSL_CERT_FILE in its own way
            trust_env=False,
            timeout=httpx.Timeout(connect=up.connect_timeout, read=read, write=read, pool=read),
            limits=httpx.Limits(
                max_connections=up.max_connections,
                max_keepalive_connections=up.max_connections,
                keepalive_expiry=http.IDLE_S,
            ),
        )
        return self._client

    async def post(self, body: bytes) -> HttpxResponse:
        client = self._client or self._open()
        request = client.build_request("POST", self.upstream.url, content=body, headers=self.upstream.headers)
        try:
            return HttpxResponse(await client.send(request, stream=True))
        except httpx.RequestError as exc:
            raise _translate(exc) from exc

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class HttpxResponse:
    """An httpx response in the seam's terms."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.reason = response.reason_phrase

    @property
    def content_type(self) -> str:
        return str(self._response.headers.get("content-type", "")).split(";", 1)[0].strip().lower()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.RequestError as exc:
            raise _translate(exc) from exc

    async def read(self, limit: int | None = None) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_chunks():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        data = b"".join(parts)
        return data if limit is None else data[:limit]

    async def aclose(self) -> None:
        # httpcore drops a connection whose response was not read to its end, and pools it otherwise
        await self._response.aclose()


def _translate(exc: httpx.RequestError) -> OSError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(detail)
    if isinstance(exc, httpx.DecodingError | httpx.RemoteProtocolError | httpx.LocalProtocolError):
        return http.ProtocolError(detail)
    return ConnectionError(detail)
