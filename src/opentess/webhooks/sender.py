"""One delivery attempt: the signed HTTP request, sent to the checked address.

Signing follows the Standard Webhooks specification (standardwebhooks.com): ``webhook-id``
(the delivery's message id, the same on every retry), ``webhook-timestamp`` (seconds, this
attempt's) and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256, keyed with the secret's
bytes, over ``id.timestamp.content``), so that a receiver verifies it with the
``standardwebhooks`` or ``svix`` libraries. The content signed is the body of a POST and the
query string of a GET.

The connection goes to an address ``safety.checked_addresses`` approved, through
``netguard.PinnedClient`` (the next address when one refuses the connection, the URL's host in
the ``Host`` header and in TLS, a connection pool per host, no proxy, redirects not followed);
the whole exchange is bounded by the receiver timeout; only the first kilobyte of the answer is
read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from standardwebhooks import Webhook as Signer

from opentess import __version__, netguard
from opentess.webhooks import safety

USER_AGENT = f"opentess-webhooks/{__version__}"
RESPONSE_CHARS = 1000
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
        self._client = netguard.PinnedClient(timeout_s=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, url: str, method: str, secret: str, message_id: str, payload: dict[str, Any]) -> Outcome:
        """One attempt; never raises (the outcome says what happened)."""
        try:
            target = safety.parse(url, self.allow_hosts)
            addresses = await safety.checked_addresses(target)
        except safety.Refused as exc:
            return Outcome(False, error=f"refused: {exc}")
        content: bytes | None = None
        headers = {"user-agent": USER_AGENT}
        if method == "GET":
            query = urlencode([(k, _query_value(payload.get(k))) for k in GET_FIELDS])
            target = replace(target, path=target.path + ("&" if "?" in target.path else "?") + query)
            signed = target.path.split("?", 1)[1]
        else:
            content = orjson.dumps(payload)
            signed = content.decode()
            headers["content-type"] = "application/json"
        headers.update(sign(secret, message_id, datetime.now(UTC), signed))
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.open(target, addresses, method=method, headers=headers, content=content)
                try:
                    head = await _head(response)
                finally:
                    await response.aclose()
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


async def _head(response: httpx.Response) -> bytes:
    """The answer's first kilobyte (the rest is never read)."""
    head = b""
    async for chunk in response.aiter_raw():
        head += chunk
        if len(head) >= RESPONSE_CHARS:
            break
    return head


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 1)
