"""One delivery attempt: the signed HTTP request, sent to the checked address.

Signing follows the Standard Webhooks specification (standardwebhooks.com): ``webhook-id``
(the delivery's message id, the same on every retry), ``webhook-timestamp`` (seconds, this
attempt's) and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256, keyed with the secret's
bytes, over ``id.timestamp.content``), so that a receiver verifies it with the
``standardwebhooks`` or ``svix`` libraries. The content signed is the body of a POST and the
query string of a GET.

The connection goes to an address ``safety.checked_addresses`` approved (the next one when one
refuses the connection), with the URL's host in the ``Host`` header and in TLS (SNI and the
certificate check), over a connection pool of that host's own; redirects are not followed; the
whole exchange is bounded by the receiver timeout; only the first kilobyte of the answer is read."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from standardwebhooks import Webhook as Signer

from opentess import __version__
from opentess.webhooks import safety

USER_AGENT = f"opentess-webhooks/{__version__}"
RESPONSE_CHARS = 1000
MAX_POOLS = 64  # receivers' hosts with connections kept open (the least recently used is closed)
MAX_ADDRESSES = 3  # tried in turn when one refuses the connection (an IPv6 and an IPv4 address, say)
# what a GET delivery carries in its query string (the rest: GET /agent-responses/{id})
GET_FIELDS = ("id", "status", "template_id", "root_id", "credits", "created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class Outcome:
    success: bool
    status_code: int | None = None
    duration_ms: float | None = None
    error: str | None = None
    response: str | None = None


def _query_value(value: Any) -> str:
    return "" if value is None else str(value)


def sign(secret: str, message_id: str, when: datetime, content: str) -> dict[str, str]:
    """The three Standard Webhooks headers for ``content``."""
    when = when.astimezone(UTC).replace(microsecond=0)  # sign() reads the time as UTC: give it UTC
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Signer(secret).sign(message_id, when, content),
    }


class Sender:
    def __init__(self, allow_hosts: Sequence[str], timeout_s: float) -> None:
        self.allow_hosts = list(allow_hosts)
        self.timeout_s = timeout_s
        # certificates checked against the system's (SSL_CERT_FILE / SSL_CERT_DIR point elsewhere),
        # as for the model upstreams
        self._tls = ssl.create_default_context()
        self._clients: OrderedDict[tuple[str, str], httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self, target: safety.Target) -> httpx.AsyncClient:
        """The connection pool of one URL host. httpx pools connections by the address connected
        to, so one pool for every host would send a request for one name over a TLS connection
        verified for another name at the same address."""
        key = (target.scheme, target.host)
        client = self._clients.pop(key, None)
        if client is None:
            # no proxy from the environment: the connection must go to the address that was checked
            client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                verify=self._tls,
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=4),
            )
            if len(self._clients) >= MAX_POOLS:
                _, oldest = self._clients.popitem(last=False)
                closing = asyncio.get_running_loop().create_task(oldest.aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        self._clients[key] = client  # the most recently used last
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        await asyncio.gather(*(c.aclose() for c in clients), *self._closing, return_exceptions=True)

    async def send(self, url: str, method: str, secret: str, message_id: str, payload: dict[str, Any]) -> Outcome:
        """One attempt; never raises (the outcome says what happened)."""
        try:
            target = safety.parse(url, self.allow_hosts)
            addresses = await safety.checked_addresses(target)
        except safety.Refused as exc:
            return Outcome(False, error=f"refused: {exc}")
        path = target.path
        content: bytes | None = None
        headers = {"user-agent": USER_AGENT, "host": target.host_header}
        if method == "GET":
            query = urlencode([(k, _query_value(payload.get(k))) for k in GET_FIELDS])
            path += ("&" if "?" in path else "?") + query
            signed = path.split("?", 1)[1]
        else:
            content = orjson.dumps(payload)
            signed = content.decode()
            headers["content-type"] = "application/json"
        headers.update(sign(secret, message_id, datetime.now(UTC), signed))
        extensions: dict[str, Any] = {}
        if target.scheme == "https" and safety.literal(target.host) is None:
            extensions["sni_hostname"] = target.host  # TLS names the host, not the address connected to
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                response, head = await self._exchange(target, addresses, path, method, content, headers, extensions)
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(False, duration_ms=_ms(began), error=f"timed out after {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Outcome(False, duration_ms=_ms(began), error=f"{type(exc).__name__}: {exc}"[:500])
        text = head[:RESPONSE_CHARS].decode("utf-8", errors="replace")
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(True, status, _ms(began), None, text)
        if 300 <= status < 400:
            error = f"HTTP {status}: redirect to {response.headers.get('location', '?')} not followed"
        else:
            error = f"HTTP {status}"
        return Outcome(False, status, _ms(began), error, text)

    async def _exchange(
        self,
        target: safety.Target,
        addresses: list[safety.Address],
        path: str,
        method: str,
        content: bytes | None,
        headers: dict[str, str],
        extensions: dict[str, Any],
    ) -> tuple[httpx.Response, bytes]:
        """Send to the first address that takes the connection; the answer's first kilobyte."""
        client = self._client(target)
        for n, address in enumerate(addresses[:MAX_ADDRESSES]):
            host = f"[{address}]" if address.version == 6 else str(address)
            request = client.build_request(
                method, f"{target.scheme}://{host}:{target.port}{path}", content=content, headers=headers,
                extensions=extensions,
            )  # fmt: skip
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError:
                if n + 1 < min(len(addresses), MAX_ADDRESSES):
                    continue
                raise
            try:
                head = b""
                async for chunk in response.aiter_raw():
                    head += chunk
                    if len(head) >= RESPONSE_CHARS:
                        break
            finally:
                await response.aclose()
            return response, head
        raise httpx.ConnectError("no address to connect to")


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 1)
