"""The published OpenAPI document, fuzzed against the live server with schemathesis (a bounded
number of generated requests per operation, valid and invalid, in every phase): no request
makes a 5xx, and every answer matches what the document says of its status, content type and
schema. (Its CLI, not its pytest plugin: the plugin does not run under pytest 9.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.world import World, make_settings, seed

EXAMPLES_PER_OPERATION = 5
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def fuzzed(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, World]]:
    # a world of its own: the fuzzer deletes and changes what it finds
    world = seed(make_settings(tmp_path_factory.mktemp("fuzz"), upstream.url))
    server = LiveServer(world.settings).start()
    yield server, world
    server.stop()


def test_no_request_breaks_the_api(fuzzed: tuple[LiveServer, World], tmp_path: Path) -> None:
    """Revoking tokens is left out: the fuzzer would revoke the token it calls with."""
    server, world = fuzzed
    cli = Path(sys.executable).parent / "schemathesis"
    # fmt: off
    command = [
        str(cli), "run", f"{server.url}/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--seed", "20261127", "--generation-deterministic",
        "--header", f"Authorization: Bearer {world.token}",
        "--exclude-operation-id-regex", "^revoke_token",
        "--request-timeout", "60",
        "--workers", "1",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    # fmt: on
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-3000:]
