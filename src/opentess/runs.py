"""Runs in flight: one stored execution being generated, and the registry that can cancel any of
them by id and ends them all at shutdown.

A run is cancelled three ways, each stored as ``cancelled`` with the partial output: its client
disconnects (the serving task is cancelled), someone calls ``POST /agent-responses/{id}/cancel``
(``Run.cancel``), or the server shuts down (``RunRegistry.shutdown``). Only a cancel by request
turns into a ``RunCancelled`` error for a caller who is still listening."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentess.errors import OpentessError
from opentess.providers import Completion
from opentess.store import Store

if TYPE_CHECKING:
    from opentess.service import RunPlan

log = logging.getLogger("opentess.runs")
BY_REQUEST = "cancelled by request"


class RunCancelled(OpentessError):
    status = 409
    error = "Cancelled"
    openai_type = "cancelled"

    def __init__(self) -> None:
        super().__init__("The run was cancelled")


@dataclass(slots=True)
class RunResult:
    """The stored end of a run."""

    status: str
    output: str
    completion: Completion
    credits: float
    updated_at: datetime


class Run:
    """One stored execution being generated."""

    def __init__(
        self, store: Store, plan: RunPlan, execution_id: int, created_at: datetime, status: str = "running"
    ) -> None:
        self.store = store
        self.plan = plan
        self.id = execution_id
        self.root_id = plan.root_id if plan.root_id is not None else execution_id
        self.created_at = created_at
        self.status = status
        self.parts: list[str] = []
        self.cancel_reason: str | None = None
        self._task: asyncio.Task[Any] | None = None
        self._on_end: list[Any] = []
        self.ended = asyncio.Event()

    @property
    def output(self) -> str:
        return "".join(self.parts)

    def cancel(self, reason: str = BY_REQUEST) -> bool:
        """Stop the run wherever it is awaiting; False when it is not running any more."""
        if self.status not in ("starting", "running") or self.cancel_reason is not None:
            return False
        self.cancel_reason = reason
        if self._task is not None and not self._task.done():
            self._task.cancel()
        return True

    async def mark_running(self) -> None:
        """starting → running, for runs that wait in the background before they start."""
        if self.status == "starting":
            self.status = "running"
            await self.store.executions.set_status(self.id, "running")

    async def events(self) -> AsyncIterator[str | RunResult]:
        """Text deltas, then the RunResult once the execution is stored as finished.

        A failure is stored ``failed`` and re-raised; a cancellation is stored ``cancelled``."""
        completion: Completion | None = None
        self._task = asyncio.current_task()
        if self.cancel_reason is not None:  # cancelled before it started
            await self._end("cancelled", error=self.cancel_reason)
            raise RunCancelled()
        stream = self.plan.provider.stream(self.plan.request)
        finished = False
        try:
            async for item in stream:
                if isinstance(item, str):
                    self.parts.append(item)
                    yield item
                    # whoever resumes this generator is the task to cancel from now on
                    self._task = asyncio.current_task()
                else:
                    completion = item
            if completion is None:
                raise OpentessError(f"model {self.plan.model} ended without finishing its answer")
            result = await self._finish(completion)
            finished = True
            yield result
        except asyncio.CancelledError:
            finished = True
            await self._end("cancelled", error=self._cancel_message())
            if self._cancelled_by_request():
                _uncancel()
                raise RunCancelled() from None
            raise
        except Exception as exc:
            finished = True
            await self._end("failed", error=_describe(exc))
            raise
        finally:
            await _close(stream)
            if not finished:  # the consumer closed the iterator early: it is gone
                await self._end("cancelled", error=self._cancel_message())

    async def complete(self) -> RunResult:
        """Run to the end without streaming (providers may use a cheaper non-streaming call)."""
        self._task = asyncio.current_task()
        try:
            if self.cancel_reason is not None:
                raise asyncio.CancelledError
            text, completion = await self.plan.provider.complete(self.plan.request)
        except asyncio.CancelledError:
            await self._end("cancelled", error=self._cancel_message())
            if self._cancelled_by_request():
                _uncancel()
                raise RunCancelled() from None
            raise
        except Exception as exc:
            await self._end("failed", error=_describe(exc))
            raise
        self.parts = [text]
        return await self._finish(completion)

    async def drain(self) -> RunResult | None:
        """Consume the run in the background (/execute without streaming); failures are stored."""
        try:
            await self.mark_running()
            result = None
            async for item in self.events():
                if not isinstance(item, str):
                    result = item
            return result
        except OpentessError:
            return None  # stored failed/cancelled by events()

    def _cancelled_by_request(self) -> bool:
        return self.cancel_reason == BY_REQUEST

    def _cancel_message(self) -> str:
        return self.cancel_reason or "cancelled: the client disconnected"

    async def _finish(self, completion: Completion) -> RunResult:
        output = self.output
        credits = self.plan.model_config.credits(completion.prompt_tokens, completion.completion_tokens)
        self.status = "succeeded"
        updated_at = await self.store.executions.finish(
            self.id,
            status="succeeded",
            output=output,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            credits=credits,
            finish_reason=completion.finish_reason,
        )
        self._ended()
        return RunResult("succeeded", output, completion, credits, updated_at)

    async def _end(self, status: str, *, error: str) -> None:
        """Store a failed/cancelled end; a storage failure here is logged, never masks the cause."""
        if self.status not in ("starting", "running"):
            return
        self.status = status
        try:
            await asyncio.shield(self.store.executions.finish(self.id, status=status, output=self.output, error=error))
        except Exception:
            log.exception("could not store the end of execution %s (%s)", self.id, status)
        finally:
            self._ended()

    def _ended(self) -> None:
        self.ended.set()
        for callback in self._on_end:
            callback(self)
        self._on_end.clear()


class RunRegistry:
    """The runs of this process by execution id, and the background tasks that drive some of them."""

    def __init__(self) -> None:
        self._runs: dict[int, Run] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def add(self, run: Run) -> Run:
        self._runs[run.id] = run
        run._on_end.append(lambda r: self._runs.pop(r.id, None))
        return run

    def get(self, execution_id: int) -> Run | None:
        return self._runs.get(execution_id)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` independently of the request that started it (kept referenced here)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def shutdown(self) -> None:
        """Cancel every run of this process and wait until each has stored its end."""
        for run in list(self._runs.values()):
            run.cancel("cancelled: the server shut down")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, OpentessError) else f"internal error: {type(exc).__name__}"


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
