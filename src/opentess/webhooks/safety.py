"""Where a webhook may send: ``https`` only, to public addresses only — except the hosts an
operator lists in ``OPENTESS_WEBHOOK_ALLOW_HOSTS`` (``host`` or ``host:port``), which may use
``http`` and resolve to any address.

The check is made when a webhook is registered (a quick answer for an obvious mistake) and
again at every delivery, on the addresses the host resolves to *then* (a name that resolved to a
public address yesterday may resolve to 127.0.0.1 today: DNS rebinding); the connection then
goes to the address that was checked, never to a second lookup's answer."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048
RESOLVE_TIMEOUT_S = 5.0
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The URL may not be called; the message says why (shown to the webhook's owner)."""


class Unresolvable(Refused):
    """The host has no address now (it may have one later)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL taken apart: what to connect to and what to say in the request."""

    scheme: str
    host: str  # lower-case; IPv6 without brackets
    port: int
    path: str  # path and query, as given
    allowed: bool  # the host is in the allow list: http and any address are fine

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


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
        entries.add(((parts.hostname or text).strip("[]"), port))
    return entries


def parse(url: str, allow_hosts: Sequence[str]) -> Target:
    """The URL as a Target, or Refused saying what is wrong with it (no name lookup here)."""
    if not isinstance(url, str) or not url.strip():
        raise Refused("The url field is required.")
    if len(url) > MAX_URL_CHARS:
        raise Refused(f"The url must not be longer than {MAX_URL_CHARS} characters.")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise Refused("The url must not contain spaces or control characters.")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise Refused("The url must be an absolute https URL, such as https://example.com/hook.")
    if parts.username is not None or parts.password is not None:
        raise Refused("The url must not contain credentials (user:password@).")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise Refused("The url has an invalid port.") from exc
    host = parts.hostname.lower().rstrip(".")
    entries = _allow_entries(allow_hosts)
    allowed = (host, None) in entries or (host, port) in entries
    if scheme != "https" and not allowed:
        raise Refused("The url must use https (http only for hosts in OPENTESS_WEBHOOK_ALLOW_HOSTS).")
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
    """Why a webhook may not connect to this address (None: it may): anything but a globally
    routable address — loopback, private, link-local (cloud metadata at 169.254.169.254 among
    them), shared (100.64/10), multicast, reserved, unspecified."""
    inner = _embedded_v4(ip)
    if inner is not None:
        return forbidden(inner)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata endpoints live there)"
    if ip.is_private:
        return "a private address"
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


async def checked_addresses(target: Target) -> list[Address]:
    """The addresses to connect to, in the resolver's order, once every address the host
    resolves to has passed the check (a host in the allow list passes whatever it resolves to)."""
    addresses = await resolve(target.host, target.port)
    if not target.allowed:
        for ip in addresses:
            reason = forbidden(ip)
            if reason is not None:
                what = f"{ip} is" if literal(target.host) is not None else f"{target.host} resolves to {ip},"
                raise Refused(
                    f"{what} {reason}; webhooks may only call public addresses "
                    "(list the host in OPENTESS_WEBHOOK_ALLOW_HOSTS to allow it)"
                )
    return addresses
