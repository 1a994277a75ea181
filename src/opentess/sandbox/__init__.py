"""Agent instructions rendered in child processes under time, memory and output limits.

The server never parses or compiles a user's template itself (see ``worker.py`` for why). A
small pool of long-lived child processes does it; a render that outlives its time limit is
stopped by the child's own alarm, and if the child does not answer soon after, it is killed and
replaced. The rendered text of recent (instructions, values) pairs is cached here, bounded in
bytes, because most calls of an agent render the same values. Templates that hit the time limit
are refused at once for a while afterwards, so that a hostile agent cannot keep the pool busy."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from opentess.childproc import Child
from opentess.errors import OpentessError, TemplateProblem

log = logging.getLogger("opentess.sandbox")
KILL_GRACE_S = 1.0  # how long past its own alarm a child may take before it is killed
POISON_S = 600.0  # how long a template that hit the time limit is refused without rendering


@dataclass(frozen=True, slots=True)
class TemplateCheck:
    variables: list[str]
    forbidden: list[str]
    inputs: list[str]  # fields read as inputs["name"]


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    time_s: float = 1.0
    memory_mb: int = 256
    max_output_chars: int = 100_000
    workers: int = 2
    cache_bytes: int = 8 * 1024 * 1024


# one entry takes at most this share of the cache (128 KiB of the default 8 MiB): the renders a
# cache saves are the small ones of most calls (a render is one round trip to a child process,
# ~0.1 ms); a render of hundreds of kilobytes costs its call far more on its way to the model
# than to render again, and a handful of them would fill the cache and stay resident
# (bench/attacks.py: 40 renders of 200,000 characters kept the server 8 MiB larger)
MAX_ENTRY_SHARE = 64


class _ByteLRU:
    """Rendered texts by key, evicting the least recently used past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._entries: OrderedDict[tuple[str, bytes], str] = OrderedDict()

    def get(self, key: tuple[str, bytes]) -> str | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: tuple[str, bytes], value: str, cost: int) -> None:
        if cost > self.limit // MAX_ENTRY_SHARE:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= _cost(key, old)
        self._entries[key] = value
        self.size += cost
        while self.size > self.limit and self._entries:
            k, v = self._entries.popitem(last=False)
            self.size -= _cost(k, v)


def _cost(key: tuple[str, bytes], value: str) -> int:
    return len(value) + len(key[0]) + len(key[1]) + 64


class TemplateSandbox:
    """Renders and checks instructions templates in child processes (see the module docstring)."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._idle: list[Child] = []
        self._slots = asyncio.Semaphore(self.limits.workers)
        self._cache = _ByteLRU(self.limits.cache_bytes)
        self._poisoned: dict[str, float] = {}
        self._closed = False

    async def render(self, source: str, values: dict[str, Any]) -> str:
        """The rendered instructions; TemplateProblem when they cannot be rendered."""
        if "{" not in source:
            return source
        key = _key(source, values)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        digest = hashlib.sha256(source.encode()).hexdigest()
        until = self._poisoned.get(digest)
        if until is not None:
            if until > time.monotonic():
                raise TemplateProblem(
                    f"rendering took longer than {self.limits.time_s:g} s (this template was stopped recently)", "limit"
                )
            del self._poisoned[digest]
        answer = await self._ask({"op": "render", "source": source, "values": values})
        if "error" in answer:
            if answer.get("kind") == "limit" and "longer than" in answer["error"]:
                self._poisoned[digest] = time.monotonic() + POISON_S
            raise TemplateProblem(answer["error"], answer.get("kind", "runtime"))
        text: str = answer["ok"]
        self._cache.put(key, text, _cost(key, text))
        return text

    async def check(self, source: str) -> TemplateCheck:
        """The variables a template reads and the blocks it may not use; TemplateProblem for a
        syntax error."""
        answer = await self._ask({"op": "check", "source": source})
        if "error" in answer:
            raise TemplateProblem(answer["error"], answer.get("kind", "syntax"))
        return TemplateCheck(answer["variables"], answer["forbidden"], answer.get("inputs", []))

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise OpentessError("the template renderer is shut down")
        request["max_output"] = self.limits.max_output_chars
        async with self._slots:
            child = self._idle.pop() if self._idle else await self._spawn()
            try:
                answer = await asyncio.wait_for(child.ask(request), timeout=self.limits.time_s + KILL_GRACE_S)
            except TimeoutError:
                log.warning("a template render did not stop at its time limit; its process was killed")
                await child.stop(kill=True)
                return {"error": f"rendering took longer than {self.limits.time_s:g} s", "kind": "limit"}
            except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
                code = await child.process.wait()
                log.warning("the template renderer exited (status %s) while rendering: %s", code, exc)
                return {"error": "rendering needed more memory than allowed", "kind": "memory"}
            except BaseException:
                await child.stop(kill=True)  # cancelled mid-answer: the pipe is out of step
                raise
            if answer.pop("recycle", False) or not child.alive:
                await child.stop()
            else:
                self._idle.append(child)
            return answer

    async def _spawn(self) -> Child:
        env = {
            **os.environ,
            "OPENTESS_SANDBOX_MEMORY_MB": str(self.limits.memory_mb),
            "OPENTESS_SANDBOX_TIME_S": str(self.limits.time_s),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "opentess.sandbox.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        return Child(process)

    async def __aenter__(self) -> TemplateSandbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        children, self._idle = self._idle, []
        for child in children:
            await child.stop()


def _key(source: str, values: dict[str, Any]) -> tuple[str, bytes]:
    return source, orjson.dumps(values, option=orjson.OPT_SORT_KEYS)
