"""What a run does besides the model's answer: its steps (a search, a page read, a tool call),
the sources it found, and the credits they cost; and the seam through which a toolset drives a
run (``Program``).

A run without a program is one model call, the hot path. A program (opentess.toolsets) drives
the run instead: it may add to the context once the execution is stored (a grounded search),
call the model several times (the ``agent`` loop) and run tools between calls. It yields the
answer's text as it comes, a ``StepStarted`` as each step begins (the native stream shows it),
and last one ``Completion`` whose tokens count every model call of the run. What it records
(``RunRecord``) is stored with the execution's end, whether the run succeeds, fails or is
cancelled."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from opentess.providers import Completion

if TYPE_CHECKING:
    from opentess.executions.context import ContextDraft
    from opentess.executions.live import ExecutionPlan

MAX_ARGUMENT_CHARS = 2000  # of one step's arguments, as stored
MAX_ERROR_CHARS = 500


@dataclass(slots=True)
class Step:
    """One operation of a run, as stored on the execution (``steps``)."""

    index: int  # from 1, in the order the steps began
    tool: str
    arguments: dict[str, Any]
    began: float = field(default_factory=time.perf_counter, repr=False)
    duration_ms: float | None = None
    result_chars: int | None = None
    error: str | None = None

    def done(self, result_chars: int = 0, error: str | None = None) -> Step:
        self.duration_ms = round((time.perf_counter() - self.began) * 1000, 3)
        self.result_chars = result_chars
        self.error = error[:MAX_ERROR_CHARS] if error else None
        return self

    def stored(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tool": self.tool,
            "arguments": _bounded(self.arguments),
            "duration_ms": self.duration_ms,
            "result_chars": self.result_chars,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class StepStarted:
    """An event of the run: this step is under way."""

    step: Step


@dataclass(slots=True)
class RunRecord:
    """What a program records while it drives a run."""

    steps: list[Step] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)  # {"index", "title", "url", "snippet"}
    credits: float = 0.0  # what the toolset's operations cost, on top of the model's tokens
    context: dict[str, Any] | None = None  # the context's records, when the program added to them
    messages: list[dict[str, Any]] | None = None  # what the model was sent last, when it changed

    def begin(self, tool: str, arguments: dict[str, Any]) -> Step:
        step = Step(len(self.steps) + 1, tool, arguments)
        self.steps.append(step)
        return step

    def add_source(self, title: str, url: str, snippet: str) -> int:
        """Number a source (the same URL keeps its number); returns it."""
        for source in self.sources:
            if source["url"] == url:
                return int(source["index"])
        index = len(self.sources) + 1
        self.sources.append({"index": index, "title": title, "url": url, "snippet": snippet})
        return index

    def stored(self) -> dict[str, Any]:
        """The columns of the execution's end this record fills."""
        values: dict[str, Any] = {"steps": [s.stored() for s in self.steps], "sources": self.sources}
        if self.context is not None:
            values["context"] = self.context
        if self.messages is not None:
            values["messages"] = self.messages
        return values


class Program(Protocol):
    """Drives one run (see the module's docstring). ``streaming``: the caller reads the answer
    as it comes (use the provider's stream), else the whole answer is awaited."""

    def run(
        self, plan: ExecutionPlan, record: RunRecord, streaming: bool
    ) -> AsyncIterator[str | StepStarted | Completion]: ...


class ProgramFactory(Protocol):
    """Chooses the program of a run once its context is assembled (None: one model call)."""

    def program(self, draft: ContextDraft) -> Program | None: ...

    def problems(self, toolset: str, model: str) -> list[str]:
        """What keeps this toolset from running with this model on this server now."""
        ...


def _bounded(arguments: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    room = MAX_ARGUMENT_CHARS
    for key, value in arguments.items():
        if isinstance(value, str) and len(value) > room:
            value = value[: max(room, 0)] + "…"
        out[key] = value
        room -= len(value) if isinstance(value, str) else 20
    return out
