"""Waiting for something to happen without asserting how long it took: tests wait with generous
patience and fail only when the thing never happens (a busy machine makes them slower, never red)."""

from __future__ import annotations

import time
from collections.abc import Callable

PATIENCE_S = 30.0


def wait_until(predicate: Callable[[], bool], what: str, patience_s: float = PATIENCE_S, every_s: float = 0.05) -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` if it never does."""
    give_up = time.monotonic() + patience_s
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"never happened: {what}")
        time.sleep(every_s)
