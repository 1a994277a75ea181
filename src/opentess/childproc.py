"""Long-lived child processes spoken to in frames: a 4-byte big-endian length, then an orjson
object, one request and one answer at a time over the child's stdin and stdout. The template
sandbox (opentess.sandbox) and file extraction (opentess.files.extraction) both keep a pool of
such children; this is the part they share — the parent's handle on one child, and the child's
side of the framing."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any, BinaryIO

import orjson

_HEAD = struct.Struct(">I")


class Child:
    """The parent's side of one child process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        payload = orjson.dumps(request)
        self.process.stdin.write(_HEAD.pack(len(payload)) + payload)
        await self.process.stdin.drain()
        (length,) = _HEAD.unpack(await self.process.stdout.readexactly(_HEAD.size))
        answer: dict[str, Any] = orjson.loads(await self.process.stdout.readexactly(length))
        return answer

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def stop(self, kill: bool = False) -> None:
        """Close its stdin (it exits at the end of its input), or kill it; a child that has not
        exited 5 s later is killed."""
        if self.alive:
            if kill:
                self.process.kill()
            elif self.process.stdin is not None:
                self.process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            try:
                await asyncio.wait_for(self.process.wait(), timeout=5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    """The child's next request; None when the parent closed its end."""
    head = _read_exactly(stream, _HEAD.size)
    if head is None:
        return None
    (length,) = _HEAD.unpack(head)
    body = _read_exactly(stream, length)
    if body is None:
        return None
    request: dict[str, Any] = orjson.loads(body)
    return request


def write_frame(stream: BinaryIO, answer: dict[str, Any]) -> None:
    """The child's answer, flushed at once."""
    payload = orjson.dumps(answer)
    stream.write(_HEAD.pack(len(payload)) + payload)
    stream.flush()
