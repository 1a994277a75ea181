"""A tiny time-bounded cache for the hot path. Entries live at most ``ttl_s``: with a 1-second
TTL, a change written by any process (a revoked token, an edited agent) is seen by every process
within one second, without any invalidation traffic between them.

``get_or_load`` reads through the cache with one load per key at a time: when an entry expires
under load, the requests that miss together share one database read instead of each making
their own (measured: with 32 connections, every expiry cost 32 token reads and 32 agent reads)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._generation = 0  # bumped by clear(): a load begun before it is not stored

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # rare; a full refill costs one read per key
        self._entries[key] = (time.monotonic() + self.ttl_s, value)

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value, or the result of ``load()`` (stored), with concurrent misses of one
        key sharing a single load. An exception of the load reaches every waiter and is not
        cached. A waiter that is cancelled does not cancel the load for the others."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key, load, self._generation))
            self._loading[key] = pending
            pending.add_done_callback(lambda f: self._loaded(key, f))
        return await asyncio.shield(pending)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]], generation: int) -> V:
        value = await load()
        if generation == self._generation:
            self.put(key, value)
        return value

    def _loaded(self, key: K, future: asyncio.Future[V]) -> None:
        if self._loading.get(key) is future:
            del self._loading[key]
        if not future.cancelled():
            future.exception()  # retrieved here too, in case every waiter has gone

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._loading.clear()
