"""Real `opentess serve` processes for tests that need separate processes (restart, SIGTERM,
several workers sharing PostgreSQL and Redis)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, upstream_url: str, extra: str = "") -> Path:
    path.write_text(
        f'[models.fake-gpt]\nprovider = "openai"\nbase_url = "{upstream_url}/v1"\n'
        "input_price = 1.5\noutput_price = 4.0\n"
        '[models.dead-upstream]\nprovider = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n' + extra
    )
    return path


def serve(
    config: Path, data_dir: Path, port: int, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `opentess serve` and wait until /readyz answers 200."""
    full_env = {
        **os.environ,
        "OPENTESS_DATA_DIR": str(data_dir),
        "OPENTESS_CONFIG": str(config),
        "OPENTESS_LOG_LEVEL": "warning",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "opentess", "serve", "--port", str(port), *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.communicate()[0].decode())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(proc.communicate()[0].decode())
