from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from opentess.cli import cli
from tests.support.backends import postgres_database_or_skip
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.world import World, make_settings, seed


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for the embedded SQLite default; a fresh PostgreSQL database when one is configured."""
    if request.param == "sqlite":
        yield None
        return
    with postgres_database_or_skip() as fresh:
        yield fresh


@pytest.fixture(scope="session")
def world(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory, database_url: str | None) -> World:
    return seed(make_settings(tmp_path_factory.mktemp("data"), upstream.url, database_url=database_url))


@pytest.fixture(scope="session")
def live(world: World) -> Iterator[LiveServer]:
    server = LiveServer(world.settings).start()
    yield server
    server.stop()


@pytest.fixture
def http(live: LiveServer, world: World) -> Iterator[httpx.Client]:
    """An HTTP client on the live server, authenticated as Alice."""
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {world.token}"}, timeout=60) as client:
        yield client


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def run(tmp_path: Path) -> Any:
    """The opentess CLI, in process, on a data directory of its own (no config file):
    ``run("users", "create", EMAIL)`` answers click's Result, asserting a 0 exit unless ``ok=False``."""
    runner = CliRunner()
    env = {"OPENTESS_DATA_DIR": str(tmp_path / "data"), "OPENTESS_CONFIG": ""}

    def invoke(*args: str, ok: bool = True) -> Result:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.stderr
        return result

    return invoke
