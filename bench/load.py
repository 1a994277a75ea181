"""Load generators: wrk for non-streaming requests (C, so the client is not the bottleneck) and a
closed-loop aiohttp client for streams (it reads every event, as an SDK would)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # the full chat-completions URL
    headers: dict[str, str]
    model: str = "bench"
    local_url: str = ""  # opentess: an agent of the same server on the embedded SmolLM2

    def body(self, stream: bool) -> bytes:
        payload: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Hello, how are you today?"}],
        }
        if stream:
            payload["stream"] = True
        return json.dumps(payload).encode()


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _lua(target: Target) -> Path:
    headers = {"Content-Type": "application/json", **target.headers}
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(target.body(False).decode())}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path = Path(tempfile.mkstemp(suffix=".lua")[1])
    path.write_text("\n".join(lines) + "\n")
    return path


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


@dataclass(frozen=True)
class WrkResult:
    rps: float
    mean_ms: float
    errors: int


def wrk(target: Target, connections: int, duration_s: float) -> WrkResult:
    """Non-streaming load: requests/s and mean latency, with non-2xx answers counted as errors."""
    script = _lua(target)
    threads = 1 if connections == 1 else 2
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "-s", str(script),
             target.url],
            capture_output=True, text=True, timeout=duration_s + 60, check=True,
        ).stdout  # fmt: skip
    finally:
        script.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s|m)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    count = int(errors.group(1)) if errors else 0
    if socket_errors:
        count += sum(int(g) for g in socket_errors.groups())
    return WrkResult(rps, _ms(lat.group(1), lat.group(2)) if lat else float("nan"), count)


async def _one_stream(session: aiohttp.ClientSession, target: Target, body: bytes) -> bool:
    async with session.post(target.url, data=body, headers={"Content-Type": "application/json", **target.headers}) as r:
        if r.status != 200:
            await r.read()
            return False
        async for line in r.content:
            if line.startswith(b"data: [DONE]"):
                return True
    return False


async def _streams(target: Target, clients: int, duration_s: float) -> tuple[int, int, list[float]]:
    body = target.body(True)
    connector = aiohttp.TCPConnector(limit=0)
    done = errors = 0
    times: list[float] = []
    deadline = time.perf_counter() + duration_s
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def loop() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    ok = await _one_stream(session, target, body)
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    done += 1
                    times.append(time.perf_counter() - started)
                else:
                    errors += 1

        await asyncio.gather(*(loop() for _ in range(clients)))
    return done, errors, times


@dataclass(frozen=True)
class StreamResult:
    streams_per_s: float
    p50_ms: float
    errors: int


def streams(target: Target, clients: int, duration_s: float) -> StreamResult:
    """Closed-loop streaming load: each client opens the next stream when the last one ends."""
    started = time.perf_counter()
    done, errors, times = asyncio.run(_streams(target, clients, duration_s))
    elapsed = time.perf_counter() - started
    p50 = statistics.median(times) * 1000 if times else float("nan")
    return StreamResult(done / elapsed, p50, errors)


async def _sequential(target: Target, count: int, stream: bool) -> int:
    body = target.body(stream)
    failures = 0
    timeout = aiohttp.ClientTimeout(total=30)  # a hung server is a failure to report, not a 5-minute wait
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8), timeout=timeout) as session:
        sem = asyncio.Semaphore(8)

        async def one() -> None:
            nonlocal failures
            try:
                async with (
                    sem,
                    session.post(
                        target.url, data=body, headers={"Content-Type": "application/json", **target.headers}
                    ) as r,
                ):
                    await r.read()
                    if r.status != 200:
                        failures += 1
            except (aiohttp.ClientError, TimeoutError):
                failures += 1

        await asyncio.gather(*(one() for _ in range(count)))
    return failures


def requests(target: Target, count: int, stream: bool = False) -> int:
    """Send ``count`` requests (8 at a time); returns how many failed."""
    return asyncio.run(_sequential(target, count, stream))
