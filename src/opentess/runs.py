"""Runs in flight: one stored execution being generated, and the registry that can cancel any of
them by id and ends them all at shutdown.

A run is cancelled three ways, each stored as ``cancelled`` with the partial output: its client
disconnects (the serving task is cancelled), someone calls ``POST /agent-responses/{id}/cancel``
(``Run.cancel``), or the server shuts down (``RunRegistry.shutdown``). Only a cancel by request
turns into a ``RunCancelled`` error for a caller who is still listening."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentess import metrics
from opentess.errors import OpentessError, UpstreamError, UpstreamTimeout
from opentess.providers import Completion
from opentess.store import Store
from opentess.store.executions import STORAGE_ERRORS

if TYPE_CHECKING:
    from opentess.service import RunPlan

log = logging.getLogger("opentess.runs")
BY_REQUEST = "cancelled by request"
SHUTDOWN = "cancelled: the server shut down"
TIMEOUT = "timed out"
DISCONNECTED = "cancelled: the client disconnected"


class RunCancelled(OpentessError):
    status = 409
    error = "Cancelled"
    openai_type = "cancelled"

    def __init__(self, reason: str = BY_REQUEST) -> None:
        super().__init__("The run was cancelled" if reason == BY_REQUEST else f"The run was {reason}")


class RunTimedOut(OpentessError):
    status = 504
    error = "Run timed out"
    openai_type = "timeout"


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
        self,
        store: Store,
        plan: RunPlan,
        execution_id: int,
        created_at: datetime,
        status: str = "running",
        timeout_s: float | None = None,
    ) -> None:
        self.store = store
        self.plan = plan
        self.id = execution_id
        self.root_id = plan.root_id if plan.root_id is not None else execution_id
        self.created_at = created_at
        self.status = status
        self.parts: list[str] = []
        self.cancel_reason: str | None = None
        self.timeout_s = timeout_s
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._on_end: list[Callable[[Run], Awaitable[None] | None]] = []
        self.ended = asyncio.Event()
        self.model_seconds = 0.0  # time spent waiting on the model, for the overhead metric
        self._began = time.perf_counter()
        self._early: asyncio.Future[tuple[str, Completion]] | None = None
        self._early_began = 0.0

    @property
    def output(self) -> str:
        return "".join(self.parts)

    def complete_with(self, early: asyncio.Future[tuple[str, Completion]], began: float) -> None:
        """The model call :meth:`complete` awaits, already sent (at ``began``) while the
        execution was being stored."""
        self._early, self._early_began = early, began

    def on_end(self, callback: Callable[[Run], Awaitable[None] | None]) -> None:
        """Call ``callback`` once the run has stored its end (release a lease, forget the run)."""
        self._on_end.append(callback)

    def _started(self) -> None:
        self._task = asyncio.current_task()
        if self.timeout_s is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.timeout_s, self.cancel, TIMEOUT)

    def cancel(self, reason: str = BY_REQUEST) -> bool:
        """Stop the run wherever it is awaiting; False when it is not running any more."""
        if self.status not in ("starting", "running") or self.cancel_reason is not None:
            return False
        self.cancel_reason = reason
        if self._task is not None and not self._task.done():
            self._task.cancel()
        return True

    async def mark_running(self) -> None:
        """starting → running, for runs that wait in the background before they start. The
        stored status is only informative until the end is stored: a failure here is logged and
        the run goes on."""
        if self.status == "starting":
            self.status = "running"
            try:
                await self.store.executions.set_status(self.id, "running")
            except STORAGE_ERRORS as exc:
                log.warning("could not mark execution %s running: %s", self.id, exc)

    async def events(self) -> AsyncIterator[str | RunResult]:
        """Text deltas, then the RunResult once the execution is stored as finished.

        A failure is stored ``failed`` and re-raised; a cancellation is stored ``cancelled``."""
        completion: Completion | None = None
        self._started()
        if self._stopped_on_purpose():  # cancelled before it started
            raise await self._stopped()
        stream = self.plan.provider.stream(self.plan.request)
        finished = False
        began = time.perf_counter()
        elsewhere = 0.0  # time the consumer held the generator between deltas
        try:
            async for item in stream:
                if isinstance(item, str):
                    if not self.parts:
                        metrics.child(metrics.FIRST_TOKEN_SECONDS, self.plan.model).observe(time.perf_counter() - began)
                    self.parts.append(item)
                    paused = time.perf_counter()
                    yield item
                    elsewhere += time.perf_counter() - paused
                    # whoever resumes this generator is the task to cancel from now on
                    self._task = asyncio.current_task()
                else:
                    completion = item
                    self.model_seconds = time.perf_counter() - began - elsewhere
            if completion is None:
                raise OpentessError(f"model {self.plan.model} ended without finishing its answer")
            result = await self._finish(completion)
            finished = True
            yield result
        except asyncio.CancelledError:
            finished = True
            if not self._stopped_on_purpose():  # the client went away: nobody to tell
                await self._end("cancelled", error=DISCONNECTED)
                raise
            _uncancel()
            raise await self._stopped() from None
        except Exception as exc:
            finished = True
            _count_upstream_error(self.plan.model, exc)
            await self._end("failed", error=_describe(exc))
            raise
        finally:
            await _close(stream)
            if not finished:  # the consumer closed the iterator early: it is gone
                await self._end("cancelled", error=self.cancel_reason or DISCONNECTED)

    async def complete(self) -> RunResult:
        """Run to the end without streaming (providers may use a cheaper non-streaming call)."""
        early, self._early = self._early, None
        self._started()
        if self._stopped_on_purpose():
            if early is not None:
                abandon(early)
            raise await self._stopped()
        began = self._early_began if early is not None else time.perf_counter()
        try:
            # awaiting the early call's task here also cancels it when this run is cancelled
            text, completion = await (early if early is not None else self.plan.provider.complete(self.plan.request))
            self.model_seconds = time.perf_counter() - began
        except asyncio.CancelledError:
            if not self._stopped_on_purpose():
                await self._end("cancelled", error=DISCONNECTED)
                raise
            _uncancel()
            raise await self._stopped() from None
        except Exception as exc:
            _count_upstream_error(self.plan.model, exc)
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

    def _stopped_on_purpose(self) -> bool:
        return self.cancel_reason is not None

    async def _stopped(self) -> OpentessError:
        """Store the end of a run stopped on purpose; the error to give a caller still listening."""
        if self.cancel_reason == TIMEOUT:
            message = f"The run timed out after {self.timeout_s:g} s"
            await self._end("failed", error=message)
            return RunTimedOut(message)
        reason = self.cancel_reason or BY_REQUEST
        await self._end("cancelled", error=reason)
        return RunCancelled(reason)

    async def _finish(self, completion: Completion) -> RunResult:
        output = self.output
        credits = self.plan.model_config.credits(completion.prompt_tokens, completion.completion_tokens)
        self.status = "succeeded"
        try:
            # shielded: a client that leaves now does not stop the end from being stored
            updated_at = await asyncio.shield(
                self.store.executions.finish(
                    self.id,
                    status="succeeded",
                    output=output,
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                    credits=credits,
                    finish_reason=completion.finish_reason,
                )
            )
        finally:
            await self._close_out()
        model = self.plan.model
        metrics.child(metrics.TOKENS, model, "in").inc(completion.prompt_tokens)
        metrics.child(metrics.TOKENS, model, "out").inc(completion.completion_tokens)
        return RunResult("succeeded", output, completion, credits, updated_at)

    async def _end(self, status: str, *, error: str) -> None:
        """Store a failed/cancelled end (the store retries, and keeps an end it cannot write
        for its housekeeping to write later), then release what the run holds."""
        if self.status not in ("starting", "running"):
            return
        self.status = status
        try:
            await asyncio.shield(self.store.executions.finish(self.id, status=status, output=self.output, error=error))
        finally:
            await self._close_out()

    async def _close_out(self) -> None:
        seconds = time.perf_counter() - self._began
        metrics.child(metrics.EXECUTION_SECONDS, self.plan.model, self.status).observe(seconds)
        if self._timer is not None:
            self._timer.cancel()
        self.ended.set()
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            try:
                pending = callback(self)
                if pending is not None:
                    await asyncio.shield(pending)
            except Exception:
                log.exception("an end-of-run callback of execution %s failed", self.id)


class RunRegistry:
    """The runs of this process by execution id, and the background tasks that drive some of them."""

    def __init__(self) -> None:
        self._runs: dict[int, Run] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def add(self, run: Run) -> Run:
        self._runs[run.id] = run
        run.on_end(lambda r: self._forget(r.id))
        return run

    def _forget(self, execution_id: int) -> None:
        self._runs.pop(execution_id, None)

    def cancel(self, execution_id: int, reason: str = BY_REQUEST) -> bool:
        run = self._runs.get(execution_id)
        return run is not None and run.cancel(reason)

    def get(self, execution_id: int) -> Run | None:
        return self._runs.get(execution_id)

    def ids(self) -> set[int]:
        return set(self._runs)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` independently of the request that started it (kept referenced here)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_all(self, reason: str) -> int:
        """Stop every run of this process; returns how many were running."""
        return sum(run.cancel(reason) for run in list(self._runs.values()))

    async def shutdown(self) -> None:
        """Cancel every run of this process and wait until each has stored its end."""
        self.cancel_all(SHUTDOWN)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def abandon(task: asyncio.Future[Any]) -> None:
    """Cancels a task nobody will await, its outcome marked as seen (a failure it already had is
    not the caller's, and asyncio would log it as never retrieved)."""
    task.cancel()
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _count_upstream_error(model: str, exc: Exception) -> None:
    if isinstance(exc, UpstreamError):
        metrics.UPSTREAM_ERRORS.labels(model, "timeout" if isinstance(exc, UpstreamTimeout) else "error").inc()


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
