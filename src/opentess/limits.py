"""Rate limits per API token and per workspace: requests per minute (a sliding 60-second window)
and concurrent executions. In memory for one process; in Redis for many, where every check is one
atomic script, so that a limit of N holds exactly however many processes share it."""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from opentess.errors import RateLimited

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits that apply to one caller; None means unlimited."""

    token_rpm: int | None = None
    token_concurrency: int | None = None
    workspace_rpm: int | None = None
    workspace_concurrency: int | None = None


class Limiter(Protocol):
    async def hit(self, keys: list[tuple[str, int]]) -> None:
        """Count one request against each (key, per-minute limit); RateLimited if any is full
        (and then nothing is counted)."""

    async def acquire(self, keys: list[tuple[str, int]], ttl_s: float) -> str:
        """Take one concurrency slot under each (key, limit); returns a lease id; RateLimited if
        any is full. A lease not released within ``ttl_s`` (its process died) expires."""

    async def release(self, keys: list[str], lease: str) -> None: ...

    async def aclose(self) -> None: ...


class MemoryLimiter:
    """Exact within one process."""

    def __init__(self) -> None:
        self._windows: dict[str, deque[float]] = {}
        self._leases: dict[str, dict[str, float]] = {}

    async def hit(self, keys: list[tuple[str, int]]) -> None:
        now = time.monotonic()
        windows = []
        for key, limit in keys:
            window = self._windows.setdefault(key, deque())
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            if len(window) >= limit:
                raise RateLimited(window[0] + WINDOW_S - now, key)
            windows.append(window)
        for window in windows:
            window.append(now)

    async def acquire(self, keys: list[tuple[str, int]], ttl_s: float) -> str:
        now = time.monotonic()
        for key, limit in keys:
            leases = self._leases.setdefault(key, {})
            for lease_id in [k for k, exp in leases.items() if exp <= now]:
                del leases[lease_id]
            if len(leases) >= limit:
                raise RateLimited(1, key)
        lease = uuid.uuid4().hex
        for key, _ in keys:
            self._leases[key][lease] = now + ttl_s
        return lease

    async def release(self, keys: list[str], lease: str) -> None:
        for key in keys:
            self._leases.get(key, {}).pop(lease, None)

    async def aclose(self) -> None:
        pass


# KEYS: the windows; ARGV: now (ms), window (ms), member, then one limit per key.
_HIT = """
local now, window, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local wait = 0
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window)
end
return 0
"""

# KEYS: the lease sets; ARGV: now (ms), expiry (ms), lease id, then one limit per key.
_ACQUIRE = """
local now, expiry, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then return 0 end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, lease)
  redis.call('PEXPIREAT', key, expiry)
end
return 1
"""


class RedisLimiter:
    """Exact across processes: each check is one Lua script, run atomically by Redis."""

    def __init__(self, url: str, prefix: str = "opentess:") -> None:
        from redis.asyncio import Redis

        self._redis: Any = Redis.from_url(url)
        self._prefix = prefix
        self._hit = self._redis.register_script(_HIT)
        self._acquire = self._redis.register_script(_ACQUIRE)

    async def hit(self, keys: list[tuple[str, int]]) -> None:
        now_ms = int(time.time() * 1000)
        wait_ms = await self._hit(
            keys=[f"{self._prefix}rpm:{k}" for k, _ in keys],
            args=[now_ms, int(WINDOW_S * 1000), f"{now_ms}-{uuid.uuid4().hex}", *[limit for _, limit in keys]],
        )
        if int(wait_ms) > 0:
            raise RateLimited(int(wait_ms) / 1000, ",".join(k for k, _ in keys))

    async def acquire(self, keys: list[tuple[str, int]], ttl_s: float) -> str:
        lease = uuid.uuid4().hex
        now_ms = int(time.time() * 1000)
        ok = await self._acquire(
            keys=[f"{self._prefix}conc:{k}" for k, _ in keys],
            args=[now_ms, now_ms + int(ttl_s * 1000), lease, *[limit for _, limit in keys]],
        )
        if not int(ok):
            raise RateLimited(1, ",".join(k for k, _ in keys))
        return lease

    async def release(self, keys: list[str], lease: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrem(f"{self._prefix}conc:{key}", lease)
            await pipe.execute()

    async def aclose(self) -> None:
        await self._redis.aclose()


class Admission:
    """Applies the limits of a caller: one request counted per call of ``check_request``, one
    concurrency slot held per run from ``start_run`` to ``end_run``."""

    def __init__(self, limiter: Limiter, run_ttl_s: float) -> None:
        self.limiter = limiter
        self.run_ttl_s = run_ttl_s

    async def check_request(self, token_id: int, workspace_id: int, limits: Limits) -> None:
        keys = []
        if limits.token_rpm is not None:
            keys.append((f"token:{token_id}", limits.token_rpm))
        if limits.workspace_rpm is not None:
            keys.append((f"workspace:{workspace_id}", limits.workspace_rpm))
        if keys:
            await self.limiter.hit(keys)

    async def start_run(self, token_id: int, workspace_id: int, limits: Limits) -> tuple[list[str], str] | None:
        keys = []
        if limits.token_concurrency is not None:
            keys.append((f"token:{token_id}", limits.token_concurrency))
        if limits.workspace_concurrency is not None:
            keys.append((f"workspace:{workspace_id}", limits.workspace_concurrency))
        if not keys:
            return None
        lease = await self.limiter.acquire(keys, self.run_ttl_s)
        return [k for k, _ in keys], lease

    async def end_run(self, held: tuple[list[str], str] | None) -> None:
        if held is not None:
            await self.limiter.release(*held)
