"""Where opentess may connect when a user chooses the URL: public addresses only, except the
hosts an operator lists in an allow-list setting (``host`` or ``host:port``), which may resolve
to any address.

The rule is checked on the addresses the host resolves to *when the request is made* (a name
that resolved to a public address yesterday may resolve to 127.0.0.1 today: DNS rebinding), and
the connection then goes to an address that was checked — never to a second lookup's answer:
``PinnedClient`` connects to the address while the ``Host`` header and TLS (SNI and the
certificate check) speak of the URL's name.

The setting's name is a parameter so that every caller's errors name the setting that would
allow the host (``OPENTESS_FETCH_ALLOW_HOSTS`` for the fetcher, the webhooks' own, …)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

MAX_URL_CHARS = 4096
RESOLVE_TIMEOUT_S = 5.0
MAX_ADDRESSES = 3  # tried in turn when one refuses the connection (an IPv6 and an IPv4 address, say)
MAX_POOLS = 64  # hosts with connections kept open (the least recently used is closed)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The URL may not be called; the message says why and is fit to show to whoever chose it."""


class Unresolvable(Refused):
    """The host has no address now (it may have one later): a failure rather than a refusal."""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL taken apart: what to connect to and what to say in the request."""

    scheme: str  # http or https
    host: str  # lower-case, IDNA-encoded; IPv6 without brackets
    port: int
    path: str  # path and query, as given (never the fragment)
    allowed: bool  # the host is in the allow-list: any address is fine

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.path}"


def _allow_entries(allow_hosts: Sequence[str]) -> set[tuple[str, int | None]]:
    entries: set[tuple[str, int | None]] = set()
    for raw in allow_hosts:
        text = raw.strip().lower()
        if not text:
            continue
        parts = urlsplit(f"//{text}")
        try:
            port = parts.port
        except ValueError:
            port = None
        entries.add(((parts.hostname or text).strip("[]").rstrip("."), port))
    return entries


def parse(
    url: str,
    allow_hosts: Sequence[str],
    setting: str = "OPENTESS_FETCH_ALLOW_HOSTS",
    *,
    require_https: bool = False,
    max_chars: int = MAX_URL_CHARS,
) -> Target:
    """The URL as a Target, or Refused saying what is wrong with it (no name lookup here).
    ``require_https`` refuses plain http but for allowed hosts (webhooks); fetching accepts both.
    ``max_chars`` bounds the URL (the webhooks store theirs in a column of 2,048 characters)."""
    if not isinstance(url, str) or not url.strip():
        raise Refused("The url is empty.")
    url = url.strip()
    if len(url) > max_chars:
        raise Refused(f"The url must not be longer than {max_chars} characters.")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise Refused("The url must not contain spaces or control characters.")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        wanted = "https" if require_https else "http(s)"
        raise Refused(f"The url must be an absolute {wanted} URL, such as https://example.com/page.")
    if parts.username is not None or parts.password is not None:
        raise Refused("The url must not contain credentials (user:password@).")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise Refused("The url has an invalid port.") from exc
    host = parts.hostname.lower().rstrip(".")
    if literal(host) is None:
        try:  # the Host header and TLS need the ASCII form of an internationalised name
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise Refused("The url has an invalid host name.") from exc
    entries = _allow_entries(allow_hosts)
    allowed = (host, None) in entries or (host, port) in entries
    if require_https and scheme != "https" and not allowed:
        raise Refused(f"The url must use https (http only for hosts in {setting}).")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port, path, allowed)


def _embedded_v4(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv6 one that reaches it (mapped, NAT64, 6to4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return None


def forbidden(ip: Address) -> str | None:
    """Why this address may not be connected to (None: it may): anything but a globally routable
    address — loopback, private, link-local (cloud metadata at 169.254.169.254 among them),
    shared (100.64/10), multicast, reserved, unspecified — IPv4 reached through IPv6 included."""
    inner = _embedded_v4(ip)
    if inner is not None:
        return forbidden(inner)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata endpoints live there)"
    if ip.is_private:
        return "a private address"
    if ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "a non-public address"
    return None


def literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve(host: str, port: int) -> list[Address]:
    """Every address the host resolves to now (an IP literal is itself)."""
    found = literal(host)
    if found is not None:
        return [found]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError) as exc:
        raise Unresolvable(f"{host} could not be resolved: {exc or 'timed out'}") from exc
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise Unresolvable(f"{host} has no address")
    return addresses


async def checked_addresses(target: Target, setting: str = "OPENTESS_FETCH_ALLOW_HOSTS") -> list[Address]:
    """The addresses to connect to, in the resolver's order, once every address the host
    resolves to has passed the check (a host in the allow-list passes whatever it resolves to).
    Every address, not just the first: a name with one public and one private address would
    otherwise reach the private one whenever the public one refuses the connection."""
    addresses = await resolve(target.host, target.port)
    if not target.allowed:
        for ip in addresses:
            reason = forbidden(ip)
            if reason is not None:
                what = f"{ip} is" if literal(target.host) is not None else f"{target.host} resolves to {ip},"
                raise Refused(
                    f"{what} {reason}; only public addresses may be called (list the host in {setting} to allow it)"
                )
    return addresses


class PinnedClient:
    """HTTP to checked addresses: one connection pool per (scheme, host) of the URL, because httpx
    pools connections by the address connected to, and one pool for every host would send a
    request for one name over a TLS connection verified for another name at the same address.

    No proxy from the environment (``trust_env=False``): the connection must go to the address
    that was checked. Redirects are never followed here; the caller checks each hop itself."""

    def __init__(
        self,
        *,
        timeout_s: float,
        max_connections: int = 20,
        max_pools: int = MAX_POOLS,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.max_pools = max_pools
        # certificates checked against the system's (SSL_CERT_FILE / SSL_CERT_DIR point elsewhere),
        # as for the model upstreams
        self._tls = verify or ssl.create_default_context()
        self._clients: OrderedDict[tuple[str, str], httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self, target: Target) -> httpx.AsyncClient:
        key = (target.scheme, target.host)
        client = self._clients.pop(key, None)
        if client is None:
            client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                verify=self._tls,
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=4),
            )
            if len(self._clients) >= self.max_pools:
                _, oldest = self._clients.popitem(last=False)
                closing = asyncio.get_running_loop().create_task(oldest.aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        self._clients[key] = client  # the most recently used last
        return client

    async def open(
        self,
        target: Target,
        addresses: Sequence[Address],
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send to the first of ``addresses`` that takes the connection (at most MAX_ADDRESSES
        are tried); the response is streamed: read it, then ``await response.aclose()``."""
        client = self._client(target)
        sent = {**(headers or {}), "host": target.host_header}
        extensions: dict[str, Any] = {}
        if target.scheme == "https" and literal(target.host) is None:
            extensions["sni_hostname"] = target.host  # TLS names the host, not the address connected to
        tried = list(addresses[:MAX_ADDRESSES])
        for n, address in enumerate(tried):
            host = f"[{address}]" if address.version == 6 else str(address)
            request = client.build_request(
                method, f"{target.scheme}://{host}:{target.port}{target.path}", headers=sent, content=content,
                extensions=extensions,
            )  # fmt: skip
            try:
                return await client.send(request, stream=True)
            except httpx.ConnectError:
                if n + 1 < len(tried):
                    continue
                raise
        raise httpx.ConnectError("no address to connect to")

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        await asyncio.gather(*(c.aclose() for c in clients), *self._closing, return_exceptions=True)
