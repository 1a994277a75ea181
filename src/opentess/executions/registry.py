"""The executions in flight in this process, by id: so that any of them can be cancelled, and
all of them ended at shutdown; and the background tasks that drive some of them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from opentess.executions.live import BY_REQUEST, SHUTDOWN, LiveExecution


class ExecutionRegistry:
    def __init__(self) -> None:
        self._live: dict[int, LiveExecution] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def add(self, execution: LiveExecution) -> LiveExecution:
        self._live[execution.id] = execution
        execution.on_end(lambda e: self._forget(e.id))
        return execution

    def _forget(self, execution_id: int) -> None:
        self._live.pop(execution_id, None)

    def cancel(self, execution_id: int, reason: str = BY_REQUEST) -> bool:
        execution = self._live.get(execution_id)
        return execution is not None and execution.cancel(reason)

    def get(self, execution_id: int) -> LiveExecution | None:
        return self._live.get(execution_id)

    def ids(self) -> set[int]:
        return set(self._live)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` independently of the request that started it (kept referenced here)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_all(self, reason: str) -> int:
        """Stop every execution of this process; returns how many were running."""
        return sum(execution.cancel(reason) for execution in list(self._live.values()))

    async def shutdown(self) -> None:
        """Cancel every execution of this process and wait until each has stored its end."""
        self.cancel_all(SHUTDOWN)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
