"""Where a webhook may send: the address rule of opentess.netguard with the webhooks' own
settings — ``https`` only, to public addresses only, except the hosts an operator lists in
``OPENTESS_WEBHOOK_ALLOW_HOSTS`` (``host`` or ``host:port``), which may use ``http`` and resolve
to any address; URLs up to 2,048 characters (the width of the ``url`` column).

The check is made when a webhook is registered (a quick answer for an obvious mistake) and
again at every delivery, on the addresses the host resolves to *then* (DNS rebinding); the
sender then connects to an address that was checked (netguard.PinnedClient)."""

from __future__ import annotations

from collections.abc import Sequence

from opentess import netguard
from opentess.netguard import Address, Refused, Target, Unresolvable

__all__ = ["MAX_URL_CHARS", "SETTING", "Address", "Refused", "Target", "Unresolvable", "checked_addresses", "parse"]

SETTING = "OPENTESS_WEBHOOK_ALLOW_HOSTS"
MAX_URL_CHARS = 2048


def parse(url: object, allow_hosts: Sequence[str]) -> Target:
    """The URL as a Target, or Refused saying what is wrong with it (no name lookup here)."""
    if not isinstance(url, str) or not url.strip():
        raise Refused("The url field is required.")
    return netguard.parse(url, allow_hosts, SETTING, require_https=True, max_chars=MAX_URL_CHARS)


async def checked_addresses(target: Target) -> list[Address]:
    """The addresses a delivery may connect to, or Refused naming OPENTESS_WEBHOOK_ALLOW_HOSTS."""
    return await netguard.checked_addresses(target, SETTING)
