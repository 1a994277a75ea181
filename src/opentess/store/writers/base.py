"""The writer seam and its registry. Built-in writers register exactly as another would:
``@register_writer("name", serves=…)`` on a class built from ``(engine, WriterOptions)``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import UpdateBase


@dataclass(frozen=True, slots=True)
class WriterOptions:
    pool_size: int = 10  # connections of a writer that keeps a pool of its own
    lock_wait_s: float = 30.0  # how long a SQLite write waits for another process's transaction


class ExecutionWriter(ABC):
    """Stores executions. Each call returns once its write is committed, or raises the driver's
    error for that write alone: a refused row fails only its own caller."""

    def __init__(self, engine: AsyncEngine, options: WriterOptions = WriterOptions()) -> None:
        self.engine = engine
        self.options = options

    @abstractmethod
    async def insert(self, values: dict[str, Any]) -> int:
        """A new execution from its column values; returns its id."""

    @abstractmethod
    async def update(self, execution_id: int, values: dict[str, Any]) -> int:
        """Set these columns of one execution; returns 1, or 0 when there is no such execution."""

    @abstractmethod
    async def execute(self, *statements: UpdateBase) -> list[int]:
        """Run these SQLAlchemy DML statements in one transaction, all or nothing, where this
        writer writes (the reaper's bulk updates); returns each one's row count."""

    @abstractmethod
    async def aclose(self) -> None:
        """Return once every write already accepted is stored (or has failed), then let go of
        the connections."""


WriterFactory = Callable[[AsyncEngine, WriterOptions], ExecutionWriter]


@dataclass(frozen=True, slots=True)
class _Kind:
    factory: WriterFactory
    serves: Callable[[URL], bool] | None


_KINDS: dict[str, _Kind] = {}
FALLBACK = "sqlalchemy"


def register_writer(
    name: str, serves: Callable[[URL], bool] | None = None
) -> Callable[[type[ExecutionWriter]], type[ExecutionWriter]]:
    """Register a writer class. ``serves(url)`` says whether it is the writer for that database;
    without it the writer is used only when asked for by name."""

    def decorate(cls: type[ExecutionWriter]) -> type[ExecutionWriter]:
        _KINDS[name] = _Kind(cls, serves)
        return cls

    return decorate


def _load_builtins() -> None:
    # imported for their @register_writer side effect, only when a writer is first needed
    import opentess.store.writers.engine
    import opentess.store.writers.postgres
    import opentess.store.writers.sqlite  # noqa: F401


def make_writer(
    engine: AsyncEngine, pool_size: int = 10, lock_wait_s: float = 30.0, *, kind: str | None = None
) -> ExecutionWriter:
    """The writer ``kind``, or else the first registered writer that serves the engine's database,
    or else the one that writes through SQLAlchemy (which serves any)."""
    _load_builtins()
    if kind is None:
        url = engine.url
        kind = next((name for name, k in _KINDS.items() if k.serves is not None and k.serves(url)), FALLBACK)
    return _KINDS[kind].factory(engine, WriterOptions(pool_size, lock_wait_s))
