"""UTC time as stored (naive UTC datetimes) and as shown (Laravel's ISO form)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def laravel(ts: datetime | None) -> str | None:
    """``2025-01-05T19:35:21.000000Z``, the timestamp form of every Tess response."""
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
