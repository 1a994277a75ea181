"""What several server processes must share beyond the database: the limiter (opentess.limits)
and the cancellation channel. Without Redis both are per process, which is only correct for one
process; `opentess serve --workers N` refuses to start that way."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from opentess.limits import Limiter, MemoryLimiter, RedisLimiter
from opentess.settings import Settings

log = logging.getLogger("opentess.coordination")


class CancelBus:
    """Carries "cancel execution N" to every server process. This base class reaches only its own
    process (the caller cancels local runs directly); RedisCancelBus reaches all of them."""

    shared = False

    async def start(self, on_cancel: Callable[[int], object]) -> None:
        pass

    async def publish(self, execution_id: int) -> None:
        pass

    async def aclose(self) -> None:
        pass


class RedisCancelBus(CancelBus):
    shared = True

    def __init__(self, url: str, prefix: str) -> None:
        from redis.asyncio import Redis

        self._redis: Any = Redis.from_url(url)
        self._channel = f"{prefix}cancel"
        self._task: asyncio.Task[None] | None = None

    async def start(self, on_cancel: Callable[[int], object]) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)
        self._task = asyncio.create_task(self._listen(pubsub, on_cancel))

    async def _listen(self, pubsub: Any, on_cancel: Callable[[int], object]) -> None:
        try:
            while True:
                try:
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            try:
                                on_cancel(int(message["data"]))
                            except ValueError:
                                log.warning("ignored a malformed cancel message: %r", message["data"])
                except (ConnectionError, OSError) as exc:
                    log.warning("cancel channel lost (%s); resubscribing", exc)
                    await asyncio.sleep(1)
                    await pubsub.subscribe(self._channel)
        finally:
            await pubsub.aclose()

    async def publish(self, execution_id: int) -> None:
        await self._redis.publish(self._channel, str(execution_id))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._redis.aclose()


def make_limiter(settings: Settings) -> Limiter:
    if settings.redis_url:
        return RedisLimiter(settings.redis_url, settings.redis_prefix)
    return MemoryLimiter()


def make_cancel_bus(settings: Settings) -> CancelBus:
    if settings.redis_url:
        return RedisCancelBus(settings.redis_url, settings.redis_prefix)
    return CancelBus()


def multi_process_problems(settings: Settings) -> list[str]:
    """Why this configuration would behave wrongly with more than one server process."""
    if settings.redis_url:
        return []
    problems = ["cancellation reaches only the process that runs an execution"]
    if any(
        v is not None
        for v in (
            settings.rate_limit_rpm,
            settings.rate_limit_concurrency,
            settings.workspace_rate_limit_rpm,
            settings.workspace_rate_limit_concurrency,
        )
    ):
        problems.append("rate limits would be counted per process (multiplied by the number of processes)")
    return problems
