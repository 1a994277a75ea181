"""Every marked example of the README and of docs/*.md runs as pasted, against a real server
after its first start (the environment variables the first-start banner prints), on the fake
upstream and on the embedded model. An example that fails, or whose curl gets an HTTP error,
fails the test; so does one that never ends (a runaway generation).

Mark an example with ``<!-- example -->`` on the line before its ```sh or ```python block."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.fake_web import FakeWeb
from tests.support.processes import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = re.compile(r"<!-- example -->\n```(sh|python)\n(.*?)\n```", re.S)
GUARD_S = 300  # an example still running after this is a runaway (not a speed assertion)


@dataclass(frozen=True)
class Example:
    where: str
    language: str
    code: str


def examples() -> list[Example]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in EXAMPLE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append(Example(f"{doc.relative_to(ROOT)}:{line}", match.group(1), match.group(2)))
    return found


def test_the_docs_have_examples() -> None:
    assert len([e for e in examples() if e.where.startswith("README")]) >= 4


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory like a user's checkout: `.venv/bin/opentess` works there, and curl
    fails on an HTTP error (so does the example)."""
    home = tmp_path_factory.mktemp("user")
    venv = Path(sys.executable).parent.parent
    (home / ".venv").symlink_to(venv)
    bin_dir = home / "bin"
    bin_dir.mkdir()
    real = next(p for p in os.environ["PATH"].split(os.pathsep) if (Path(p) / "curl").exists())
    wrapper = bin_dir / "curl"
    wrapper.write_text(f'#!/bin/sh\nexec {real}/curl --fail-with-body "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return home


@pytest.fixture(scope="module")
def web() -> Iterator[FakeWeb]:
    """The web the toolsets' examples search: a SearXNG and a Wikipedia of this test (an example
    never reaches a real site; only the first result's page, one of the fake's own, is read)."""
    server = FakeWeb().start()
    yield server
    server.stop()


def _toolsets(web: FakeWeb) -> str:
    return (
        f'\n[search]\nprovider = "searxng"\nbase_url = "{web.url}/searxng"\npages = 1\n'
        f'\n[wikipedia]\nbase_url = "{web.url}"\n'
    )


def _serve(home: Path, config: str, web: FakeWeb) -> Iterator[dict[str, str]]:
    data = home / "data"
    (home / "opentess.toml").write_text(config)
    port = free_port()
    env = {
        **os.environ,
        "OPENTESS_DATA_DIR": str(data),
        "OPENTESS_CONFIG": str(home / "opentess.toml"),
        "OPENTESS_LOG_LEVEL": "warning",
        "OPENTESS_FETCH_ALLOW_HOSTS": web.allow[0],  # the fake's pages are on 127.0.0.1
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "opentess", "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    exports: dict[str, str] = {}
    for line in proc.stdout:  # the first-start banner, then the server runs
        if line.strip().startswith("export OPENTESS_URL="):
            exports = dict(item.split("=", 1) for item in line.split()[1:])
            break
    try:
        wait_until(lambda: _ready(port), "the server answers /readyz")
        yield {**env, **exports, "PATH": f"{home / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # and close its pipe


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    except httpx.TransportError:
        return False


def _run(example: Example, env: dict[str, str], cwd: Path) -> None:
    if example.language == "sh":
        command = ["bash", "-euo", "pipefail", "-c", example.code]
    else:
        command = [sys.executable, "-c", example.code]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=GUARD_S)
    assert done.returncode == 0, f"{example.where} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def on_fake_upstream(shell: Path, upstream: FakeUpstream, web: FakeWeb) -> Iterator[dict[str, str]]:
    # the built-in model's name, served by the fake upstream: the demo agent runs on it
    config = f'[models.smollm2-135m]\nprovider = "openai"\nbase_url = "{upstream.url}/v1"\n' + _toolsets(web)
    (shell / "fake").mkdir()
    yield from _serve(shell / "fake", config, web)


@pytest.mark.parametrize("example", examples(), ids=lambda e: e.where)
def test_example_runs_on_the_fake_upstream(example: Example, on_fake_upstream: dict[str, str], shell: Path) -> None:
    _run(example, on_fake_upstream, shell)


@pytest.fixture(scope="module")
def on_the_embedded_model(shell: Path, web: FakeWeb) -> Iterator[dict[str, str]]:
    (shell / "model").mkdir()
    yield from _serve(shell / "model", _toolsets(web), web)


@pytest.mark.model
@pytest.mark.parametrize("example", examples(), ids=lambda e: e.where)
def test_example_runs_on_the_embedded_model(
    example: Example, on_the_embedded_model: dict[str, str], shell: Path
) -> None:
    _run(example, on_the_embedded_model, shell)
