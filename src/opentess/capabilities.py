"""What a capability (files, memories, webhooks, the console, …) adds to a server process.

Each capability is a package with a ``capability(state)`` function, called once the app's
long-lived objects exist; what it returns is plugged into the one pipeline: job kinds into the
job runner, context sources into the execution service (after the instructions, in order),
and a close hook into the lifespan. Its HTTP routes are ordinary routers of ``opentess.api``;
its tables live in ``opentess.db.models`` (imported there, so that migrations see them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from opentess.executions.context import ContextSource
from opentess.jobs import JobKind


@dataclass
class Capability:
    name: str
    job_kinds: Sequence[JobKind] = ()
    context_sources: Sequence[ContextSource] = ()
    aclose: Callable[[], Awaitable[None]] | None = None
    extras: dict[str, object] = field(default_factory=dict)  # objects other parts may look up by name
