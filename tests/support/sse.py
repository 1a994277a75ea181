"""Reading a stream in the background while the test does something else (cancel, SIGTERM)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import orjson


class BackgroundStream:
    """POSTs ``body`` to ``url`` with streaming and collects its parsed ``data:`` events."""

    def __init__(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._consume, args=(url, body, headers))
        self._thread.start()

    def _consume(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    self.events.append(orjson.loads(line[6:]))

    def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def join(self, timeout: float = 15) -> None:
        self._thread.join(timeout)
