"""The hot-path cache: entries expire, concurrent misses share one load, and a clear() (a token
revoked in this process) is never undone by a load that began before it."""

from __future__ import annotations

import asyncio

import pytest

from opentess.cache import TTLCache


class Source:
    """A slow database read that counts its calls."""

    def __init__(self, value: str = "v1", delay: float = 0.05) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0

    async def read(self) -> str:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.value


def test_concurrent_misses_share_one_load() -> None:
    async def main() -> None:
        cache: TTLCache[str, str] = TTLCache(10)
        source = Source()
        results = await asyncio.gather(*(cache.get_or_load("k", source.read) for _ in range(32)))
        assert results == ["v1"] * 32
        assert source.calls == 1
        assert await cache.get_or_load("k", source.read) == "v1"
        assert source.calls == 1  # served from the cache

    asyncio.run(main())


def test_expired_entries_are_loaded_again() -> None:
    async def main() -> None:
        cache: TTLCache[str, str] = TTLCache(0.05)
        source = Source(delay=0)
        await cache.get_or_load("k", source.read)
        await asyncio.sleep(0.1)
        source.value = "v2"
        assert await cache.get_or_load("k", source.read) == "v2"
        assert source.calls == 2

    asyncio.run(main())


def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    async def main() -> None:
        cache: TTLCache[str, str] = TTLCache(10)
        calls = 0

        async def broken() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            raise OSError("database gone")

        results = await asyncio.gather(*(cache.get_or_load("k", broken) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, OSError) for r in results)
        assert calls == 1
        assert await cache.get_or_load("k", Source(delay=0).read) == "v1"

    asyncio.run(main())


def test_a_cancelled_waiter_does_not_cancel_the_load_of_the_others() -> None:
    async def main() -> None:
        cache: TTLCache[str, str] = TTLCache(10)
        source = Source(delay=0.05)
        first = asyncio.ensure_future(cache.get_or_load("k", source.read))
        second = asyncio.ensure_future(cache.get_or_load("k", source.read))
        await asyncio.sleep(0.01)
        first.cancel()
        assert await second == "v1"
        with pytest.raises(asyncio.CancelledError):
            await first
        assert source.calls == 1

    asyncio.run(main())


def test_clear_during_a_load_keeps_its_stale_result_out_of_the_cache() -> None:
    async def main() -> None:
        cache: TTLCache[str, str] = TTLCache(10)
        stale = Source("before revocation", delay=0.05)
        pending = asyncio.ensure_future(cache.get_or_load("k", stale.read))
        await asyncio.sleep(0.01)
        cache.clear()
        fresh = Source("after revocation", delay=0)
        assert await cache.get_or_load("k", fresh.read) == "after revocation"
        assert await pending == "before revocation"  # it began before the change
        assert await cache.get_or_load("k", stale.read) == "after revocation"
        assert stale.calls == 1

    asyncio.run(main())
