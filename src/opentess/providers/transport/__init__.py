"""How a provider's requests reach its upstream: the transport seam.

A ``Transport`` POSTs bodies to one upstream URL with the headers it was built with, and owns the
connections it opens (at most ``max_connections`` at once; opened lazily in the running event
loop; closed by ``aclose``). Its responses stream: ``iter_chunks`` yields body bytes as they
arrive, and ``aclose`` on a response not read to its end drops the connection, so that the
upstream sees the disconnect and stops generating. Both transports fail the same way, which is
what lets a provider map failures once: ``OSError`` (cannot connect, reset, TLS, proxy refused,
not HTTP) and ``TimeoutError`` (no connection in the connect timeout; silence, or no free
connection, past the read timeout).

Two implementations:

- ``fast``: opentess's own HTTP/1.1 client (``opentess.providers.http``), the default: about a
  quarter of a call's CPU less than a general client, but direct connections only, verified
  against the system's certificates.
- ``httpx``: httpx, for what the fast one does not do: a proxy, a custom CA bundle, a client
  certificate.

``make_transport`` picks one: ``auto`` takes httpx when a proxy applies to the URL (an explicit
one, else ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` with ``NO_PROXY`` honoured, read by the
standard library as the environment is when the transport is made) or custom TLS is configured,
the fast one otherwise; ``fast`` and ``httpx`` force one (``fast`` ignores proxy variables).
"""

from __future__ import annotations

import ssl
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

TransportKind = Literal["auto", "fast", "httpx"]


class UpstreamResponse(Protocol):
    """An upstream's answer: status and headers on arrival, the body as it comes."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def content_type(self) -> str:
        """The media type, lower-case, without parameters."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (decompressed), until the end of the response."""
        ...

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, or its first ``limit`` bytes."""
        ...

    async def aclose(self) -> None:
        """Releases the connection: pooled if the body was read to its end, else dropped."""
        ...


class Transport(ABC):
    """POSTs to one upstream URL; owns its connection pool."""

    kind: str

    @abstractmethod
    def post(self, body: bytes) -> Awaitable[UpstreamResponse]:
        """Sends ``body``; the response once its status and headers have arrived."""

    @abstractmethod
    async def aclose(self) -> None:
        """Closes every connection this transport holds."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a transport sends, and how."""

    url: str
    headers: dict[str, str]
    connect_timeout: float | None
    read_timeout: float | None
    max_connections: int = 64
    proxy: str | None = None
    """An explicit proxy URL; None: the environment's, if one applies to ``url``."""
    ssl_context: ssl.SSLContext | None = None
    """None: the system's certificates (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured)."""


# the environment's rules only (urllib's proxy_bypass also asks macOS and Windows system settings);
# typeshed does not declare this function
_proxy_bypass_environment: Callable[[str, dict[str, str]], bool] = getattr(  # noqa: B009
    urllib.request, "proxy_bypass_environment"
)


def environment_proxy(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (``NO_PROXY`` honoured), or None."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if _proxy_bypass_environment(host, proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all") or None


def make_transport(upstream: Upstream, kind: TransportKind = "auto") -> Transport:
    """The transport for ``upstream``: see the module's docstring for how it is chosen."""
    if kind == "fast":
        if upstream.proxy is not None or upstream.ssl_context is not None:
            raise ValueError("the fast transport takes no proxy, CA bundle or client certificate")
        return _fast(upstream)
    proxy = upstream.proxy or environment_proxy(upstream.url)
    if kind == "httpx" or proxy is not None or upstream.ssl_context is not None:
        from opentess.providers.transport.httpx_transport import HttpxTransport

        return HttpxTransport(upstream, proxy)
    return _fast(upstream)


def _fast(upstream: Upstream) -> Transport:
    from opentess.providers.transport.fast import FastTransport

    return FastTransport(upstream)
