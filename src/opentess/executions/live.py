"""One execution in flight: the state machine between its stored start and its stored end.

An execution is stopped three ways, each stored as ``cancelled`` with the partial output: its
client disconnects (the serving task is cancelled), someone calls ``POST
/agent-responses/{id}/cancel`` (``LiveExecution.cancel``), or the server shuts down
(``ExecutionRegistry.shutdown``). Only a cancel by request turns into an ``ExecutionCancelled``
error for a caller who is still listening; a run past its time limit is stored ``failed``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentess import metrics
from opentess.errors import (
    CANCELLED_BY_REQUEST,
    ExecutionCancelled,
    ExecutionTimedOut,
    OpentessError,
    UpstreamError,
    UpstreamTimeout,
)
from opentess.executions.steps import Program, RunRecord, StepStarted
from opentess.providers import ChatRequest, Completion, Provider
from opentess.settings import ModelConfig
from opentess.store import Store
from opentess.store.executions import STORAGE_ERRORS

log = logging.getLogger("opentess.executions")
BY_REQUEST = CANCELLED_BY_REQUEST
SHUTDOWN = "cancelled: the server shut down"
TIMEOUT = "timed out"
DISCONNECTED = "cancelled: the client disconnected"


@dataclass(slots=True)
class ExecutionPlan:
    """Everything an execution needs once its inputs are validated and its context assembled."""

    agent_id: int
    model: str
    model_config: ModelConfig
    provider: Provider
    request: ChatRequest
    input_text: str
    root_id: int | None
    # a toolset's program drives the run instead of one model call (opentess.executions.steps)
    program: Program | None = None


@dataclass(slots=True)
class ExecutionResult:
    """The stored end of an execution."""

    status: str
    output: str
    completion: Completion
    credits: float
    updated_at: datetime


class LiveExecution:
    """One stored execution being generated."""

    def __init__(
        self,
        store: Store,
        plan: ExecutionPlan,
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
        self._on_end: list[Callable[[LiveExecution], Awaitable[None] | None]] = []
        self._ended: asyncio.Event | None = None  # made when first asked for: most runs are never waited on
        self._over = False
        self.model_seconds = 0.0  # time spent waiting on the model, for the overhead metric
        self._began = time.perf_counter()
        self._early: asyncio.Future[tuple[str, Completion]] | None = None
        self._early_began = 0.0
        # what the program records (steps, sources, their credits); None for one model call
        self.record: RunRecord | None = RunRecord() if plan.program is not None else None

    @property
    def ended(self) -> asyncio.Event:
        """Set once the run has stored its end."""
        if self._ended is None:
            self._ended = asyncio.Event()
            if self._over:
                self._ended.set()
        return self._ended

    @property
    def output(self) -> str:
        return "".join(self.parts)

    def complete_with(self, early: asyncio.Future[tuple[str, Completion]], began: float) -> None:
        """The model call :meth:`complete` awaits, already sent (at ``began``) while the
        execution was being stored."""
        self._early, self._early_began = early, began

    def on_end(self, callback: Callable[[LiveExecution], Awaitable[None] | None]) -> None:
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

    async def events(self) -> AsyncIterator[str | StepStarted | ExecutionResult]:
        """Text deltas (and, when a program drives the run, a StepStarted as each step begins),
        then the ExecutionResult once the execution is stored as finished.

        A failure is stored ``failed`` and re-raised; a cancellation is stored ``cancelled``."""
        completion: Completion | None = None
        self._started()
        if self._stopped_on_purpose():  # cancelled before it started
            raise await self._stopped()
        program, record = self.plan.program, self.record
        if program is not None and record is not None:
            stream = program.run(self.plan, record, True)
        else:
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
                elif isinstance(item, StepStarted):
                    yield item
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

    async def complete(self) -> ExecutionResult:
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
            if early is not None:
                text, completion = await early
            elif self.plan.program is not None:
                text, completion = await self._run_program()
            else:
                text, completion = await self.plan.provider.complete(self.plan.request)
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

    async def _run_program(self) -> tuple[str, Completion]:
        """The whole answer of a program-driven run (its step events have no one to go to)."""
        assert self.plan.program is not None and self.record is not None
        parts: list[str] = []
        completion: Completion | None = None
        run = self.plan.program.run(self.plan, self.record, False)
        try:
            async for item in run:
                if isinstance(item, str):
                    parts.append(item)
                    self.parts.append(item)
                elif isinstance(item, Completion):
                    completion = item
        finally:
            await _close(run)
        if completion is None:
            raise OpentessError(f"model {self.plan.model} ended without finishing its answer")
        self.parts = []
        return "".join(parts), completion

    async def drain(self) -> ExecutionResult | None:
        """Consume the run in the background (/execute without streaming); failures are stored."""
        try:
            await self.mark_running()
            result = None
            async for item in self.events():
                if isinstance(item, ExecutionResult):
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
            return ExecutionTimedOut(message)
        reason = self.cancel_reason or BY_REQUEST
        await self._end("cancelled", error=reason)
        return ExecutionCancelled(reason)

    async def _finish(self, completion: Completion) -> ExecutionResult:
        output = self.output
        credits = self.plan.model_config.credits(completion.prompt_tokens, completion.completion_tokens)
        record = self.record
        if record is not None:
            credits = round(credits + record.credits, 10)
        self.status = "succeeded"
        try:
            # a client that leaves during this write does not lose the end: the store keeps it
            # for its housekeeping to write (no shield here: it would cost a task per execution)
            updated_at = await self.store.executions.finish(
                self.id,
                status="succeeded",
                output=output,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                credits=credits,
                finish_reason=completion.finish_reason,
                extra=record.stored() if record is not None else None,
            )
        finally:
            await self._close_out()
        model = self.plan.model
        metrics.child(metrics.TOKENS, model, "in").inc(completion.prompt_tokens)
        metrics.child(metrics.TOKENS, model, "out").inc(completion.completion_tokens)
        return ExecutionResult("succeeded", output, completion, credits, updated_at)

    async def _end(self, status: str, *, error: str) -> None:
        """Store a failed/cancelled end (the store retries, and keeps an end it cannot write
        for its housekeeping to write later), then release what the run holds."""
        if self.status not in ("starting", "running"):
            return
        self.status = status
        record = self.record
        # what a toolset did and cost before the run stopped is stored (and charged) too
        extra = record.stored() if record is not None else None
        credits = round(record.credits, 10) if record is not None and record.credits else None
        try:
            await asyncio.shield(
                self.store.executions.finish(
                    self.id, status=status, output=self.output, error=error, credits=credits, extra=extra
                )
            )
        finally:
            await self._close_out()

    async def _close_out(self) -> None:
        seconds = time.perf_counter() - self._began
        metrics.child(metrics.EXECUTION_SECONDS, self.plan.model, self.status).observe(seconds)
        if self._timer is not None:
            self._timer.cancel()
        self._over = True
        if self._ended is not None:
            self._ended.set()
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            try:
                pending = callback(self)
                if pending is not None:
                    await asyncio.shield(pending)
            except Exception:
                log.exception("an end-of-run callback of execution %s failed", self.id)


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
