"""Starting what the benchmark measures, each in its own process on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from bench.load import Target

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
LITELLM_VERSION = "1.108.7"  # pinned; never 1.82.7 or 1.82.8 (compromised releases)

AGENT_YAML = """\
title: Bench
type: chat
instructions: "You are a helpful assistant. Answer in {{ language }}."
questions:
  - {type: select, name: temperature, options: ["0", "0.5", "1"], default: "0.5"}
  - {type: select, name: model, options: [bench]}
  - {type: select, name: tools, options: [no-tools]}
  - {type: text, name: language, default: English}
"""
LOCAL_INSTRUCTIONS = "You are a helpful assistant."
LOCAL_AGENT_YAML = f"""\
title: Bench local
type: chat
instructions: "{LOCAL_INSTRUCTIONS}"
questions:
  - {{type: select, name: model, options: [smollm2-135m]}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Until ``url`` answers something other than 503 (llama-server says 503 while loading)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code != 503:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def process(
    args: list[str], ready_url: str, env: dict[str, str] | None = None, log_path: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Runs a server for the benchmark. Its stderr goes to a file (a pipe nobody reads would stall
    a server that logs errors once the pipe is full; ``log_path`` keeps it for the caller to read),
    whose end is shown if the server fails."""
    with log_path.open("w+b") if log_path is not None else tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_http(ready_url, proc)
            yield proc
        except BaseException:
            log.seek(0)
            tail = log.read()[-4000:].decode("utf-8", "replace")
            if tail.strip():
                print(f"--- stderr of {Path(args[0]).name} {' '.join(args[1:3])}:\n{tail}", file=sys.stderr)
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def fake_upstream() -> Iterator[tuple[str, int]]:
    port = free_port()
    with process([sys.executable, "-m", "bench.fake_upstream", str(port)], f"http://127.0.0.1:{port}/") as proc:
        yield f"http://127.0.0.1:{port}", proc.pid


def direct_target(upstream: str) -> Target:
    return Target("direct", f"{upstream}/v1/chat/completions", {})


@contextmanager
def relay(upstream: str) -> Iterator[tuple[Target, int]]:
    port = free_port()
    with (
        tempfile.TemporaryDirectory() as tmp,
        process(
            [sys.executable, "-m", "bench.relay", str(port), upstream, str(Path(tmp) / "relay.db")],
            f"http://127.0.0.1:{port}/docs",
        ) as proc,
    ):
        yield Target("relay", f"http://127.0.0.1:{port}/v1/chat/completions", {}), proc.pid


def server_env(root: Path, config: str) -> dict[str, str]:
    """The environment of a benchmark's opentess server and of its CLI: a data dir under ``root``
    and a config file there holding ``config`` (TOML), quiet JSON logs."""
    (root / "opentess.toml").write_text(config)
    return {
        "OPENTESS_DATA_DIR": str(root / "data"),
        "OPENTESS_CONFIG": str(root / "opentess.toml"),
        "OPENTESS_LOG_LEVEL": "warning",
        "OPENTESS_LOG_FORMAT": "json",
    }


def upstream_config(upstream: str) -> str:
    """The ``bench`` model on an OpenAI-compatible upstream."""
    return f'[models.bench]\nprovider = "openai"\nbase_url = "{upstream}/v1"\n'


def _cli(env: dict[str, str], *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "opentess", *args, "--json"], env={**os.environ, **env}, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    result: dict[str, object] = json.loads(out)
    return result


@contextmanager
def opentess(
    upstream: str, workers: int = 1, database_url: str | None = None, source: Path | None = None
) -> Iterator[tuple[Target, int]]:
    """opentess on the embedded SQLite defaults (or ``database_url``), an agent on the fake upstream.
    ``source``: run the opentess of another source tree (an earlier commit's worktree) instead,
    with this environment's packages, to compare the two in one run."""
    port = free_port()
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        env = server_env(Path(tmp), upstream_config(upstream))
        agent_file = Path(tmp) / "agent.yaml"
        agent_file.write_text(AGENT_YAML)
        local_file = Path(tmp) / "local.yaml"
        local_file.write_text(LOCAL_AGENT_YAML)
        if source is not None:
            env["PYTHONPATH"] = str(Path(source).resolve() / "src")
        if database_url:
            if database_url.startswith("postgresql"):  # a schema of its own: see fresh_database
                database_url = stack.enter_context(fresh_database(database_url))
            env["OPENTESS_DATABASE_URL"] = database_url
            subprocess.run([sys.executable, "-m", "opentess", "migrate"], env={**os.environ, **env}, check=True,
                           capture_output=True)  # fmt: skip
        user = _cli(env, "users", "create", f"bench-{port}@example.com")
        workspace = str(user["default_workspace_id"])
        agent = _cli(env, "agents", "create", "--file", str(agent_file), "--workspace", workspace)
        local = _cli(env, "agents", "create", "--file", str(local_file), "--workspace", workspace)
        token = _cli(env, "tokens", "create", "--user", f"bench-{port}@example.com")
        args = [sys.executable, "-m", "opentess", "serve", "--port", str(port), "--workers", str(workers)]
        if workers > 1:
            env["OPENTESS_REDIS_URL"] = os.environ.get("OPENTESS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        with process(args, f"http://127.0.0.1:{port}/healthz", env) as proc:
            yield (
                Target(
                    "baseline" if source is not None else "opentess",
                    f"http://127.0.0.1:{port}/agents/{agent['id']}/openai/chat/completions",
                    {"Authorization": f"Bearer {token['token']}"},
                    local_url=f"http://127.0.0.1:{port}/agents/{local['id']}/openai/chat/completions",
                ),
                proc.pid,
            )


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on ``url``'s server, dropped afterwards: each measured
    server migrates a schema of its own (an earlier commit's migrations cannot run on a schema a
    later one left, and no run inherits another's rows)."""
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"opentess_bench_{os.getpid()}_{free_port()}"
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def litellm_installed() -> bool:
    return (LITELLM_VENV / "bin" / "litellm").exists()


def install_litellm() -> None:
    if litellm_installed():
        return
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"], check=True
    )


@contextmanager
def litellm(upstream: str, workers: int = 1) -> Iterator[tuple[Target, int]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "litellm.yaml"
        config.write_text(
            "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench\n"
            f"      api_base: {upstream}/v1\n      api_key: sk-bench\n"
            "litellm_settings:\n  drop_params: true\n"
        )
        args = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--port", str(port),
                "--num_workers", str(workers)]  # fmt: skip
        env = {"LITELLM_MASTER_KEY": "sk-master", "LITELLM_LOG": "ERROR", "NO_DOCS": "True"}
        with process(args, f"http://127.0.0.1:{port}/health/liveliness", env) as proc:
            yield Target("litellm", f"http://127.0.0.1:{port}/v1/chat/completions",
                         {"Authorization": "Bearer sk-master"}), proc.pid  # fmt: skip


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (workers), in KiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def which(name: str) -> str | None:
    return shutil.which(name)
