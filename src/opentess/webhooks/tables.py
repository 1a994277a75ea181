"""The webhooks capability's tables (imported by opentess.db.models, so that migrations see them)."""

from __future__ import annotations
