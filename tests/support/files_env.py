"""What the files tests run against: a seeded world of their own (its own SQLite file, or its own
PostgreSQL database), a live server whose public URL is its real address (signed upload URLs
point at it), and helpers that poll a file until it is no longer ``waiting``, as clients do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.backends import fresh_postgres_database, postgres_url
from tests.support.live import LiveServer
from tests.support.world import World, make_settings, seed


@dataclass
class FilesEnv:
    world: World
    live: LiveServer

    @property
    def url(self) -> str:
        return self.live.url

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        auth = {"Authorization": f"Bearer {token or self.world.token}"}
        return httpx.Client(base_url=self.url, headers={**auth, **headers}, timeout=60)


@contextmanager
def database(kind: str) -> Iterator[str | None]:
    """None (a SQLite file in the data dir) or a fresh PostgreSQL database; skips without one."""
    if kind == "sqlite":
        yield None
        return
    import pytest

    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL tests need OPENTESS_TEST_POSTGRES_URL")
    with fresh_postgres_database(url) as fresh:
        yield fresh


@contextmanager
def files_env(data_dir: Path, upstream_url: str, database_url: str | None, **overrides: Any) -> Iterator[FilesEnv]:
    settings = make_settings(data_dir, upstream_url, database_url=database_url, **overrides)
    world = seed(settings)
    server = LiveServer(settings)
    settings.public_url = server.url  # signed upload URLs must point at this server
    server.start()
    try:
        yield FilesEnv(world, server)
    finally:
        server.stop()


def wait_processed(client: httpx.Client, file_id: int, timeout_s: float = 120) -> dict[str, Any]:
    """Poll GET /api/files/{id} while it says ``waiting`` (Langflow's loop, with a short sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = client.get(f"/api/files/{file_id}").json()
        if body["status"] != "waiting":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"file {file_id} still waiting: {body}")
        time.sleep(0.05)


def upload(client: httpx.Client, name: str, data: bytes, process: str | None = "true", **extra: str) -> httpx.Response:
    fields = {**({"process": process} if process is not None else {}), **extra}
    return client.post("/api/files", files={"file": (name, data)}, data=fields)


def system_prompt(body: dict[str, Any]) -> str:
    """The system message an upstream request carried."""
    return str(next(m["content"] for m in body["messages"] if m["role"] == "system"))
