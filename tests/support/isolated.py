"""A world of its own: a fresh database (SQLite in a temporary directory, or a new PostgreSQL
database) seeded like the session's, for tests whose servers need settings of their own — every
server process on one database must share them (any of them may run any job)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.backends import postgres_database_or_skip
from tests.support.world import World, make_settings, seed


@contextmanager
def isolated_world(backend: str, data_dir: Path, upstream_url: str, **settings: Any) -> Iterator[World]:
    """``backend``: "sqlite" or "postgres" (skipped without OPENTESS_TEST_POSTGRES_URL)."""
    if backend == "sqlite":
        yield seed(make_settings(data_dir, upstream_url, **settings))
        return
    with postgres_database_or_skip() as url:
        yield seed(make_settings(data_dir, upstream_url, database_url=url, **settings))


def with_settings(world: World, **changes: Any) -> World:
    """The same world (same database) seen by a server with other settings."""
    return dataclasses.replace(world, settings=world.settings.model_copy(update=changes))
