"""The webhooks routes."""

from __future__ import annotations

from opentess.api import routing

router = routing.router()
