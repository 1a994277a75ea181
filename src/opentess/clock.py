"""UTC time as stored (naive UTC datetimes) and as shown (Laravel's ISO form)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

_EPOCH = datetime(1970, 1, 1)


def utcnow() -> datetime:
    """Now, as a naive UTC datetime to the microsecond. The epoch plus the clock's microseconds:
    ``datetime.now(UTC).replace(tzinfo=None)`` gives the same value at twice the cost (a
    keyword call), several times per request."""
    return _EPOCH + timedelta(microseconds=time.time_ns() // 1000)


def laravel(ts: datetime | None) -> str | None:
    """``2025-01-05T19:35:21.000000Z``, the timestamp form of every Tess response."""
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
