"""The server's side of extraction: a small pool of long-lived worker processes
(opentess.files.worker). A process is started on first use and reused, because starting one
and importing the parsers costs more than reading a typical document; one that runs past the
time limit is killed and replaced, and so is one that stopped answering."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from opentess.childproc import Child
from opentess.files.extract import ExtractionError


@dataclass(frozen=True, slots=True)
class Extraction:
    kind: str
    pages: int | None
    chars: int
    note: str | None
    chunks: list[tuple[str, str]]  # (location, text)


class ExtractionPool:
    def __init__(self, workers: int, memory_mb: int, timeout_s: float) -> None:
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[Child] = []
        self._all: set[Child] = set()

    async def _spawn(self) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "opentess.files.worker", str(self.memory_mb),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
        )  # fmt: skip
        worker = Child(process)
        self._all.add(worker)
        return worker

    async def extract(
        self, path: Path, filename: str, content_type: str, *, max_pages: int, max_chars: int, chunk_chars: int
    ) -> Extraction:
        """The file's chunks; ExtractionError when it has none (the message says why)."""
        request = {
            "path": str(path), "filename": filename, "content_type": content_type,
            "max_pages": max_pages, "max_chars": max_chars, "chunk_chars": chunk_chars,
        }  # fmt: skip
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._spawn()
            try:
                answer = await asyncio.wait_for(worker.ask(request), timeout=self.timeout_s)
            except TimeoutError:
                await self._discard(worker)
                raise ExtractionError(
                    f"Reading the file took longer than {self.timeout_s:g} s; it was stopped."
                ) from None
            except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
                await self._discard(worker)
                raise ExtractionError(
                    f"The reader stopped while reading the file (it may need more than {self.memory_mb} MiB of memory)."
                ) from None
            except BaseException:  # cancelled mid-answer: the worker's state is unknown
                await self._discard(worker)
                raise
            if worker.alive:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
        if not answer.get("ok"):
            raise ExtractionError(str(answer.get("error") or "The file could not be read."))
        return Extraction(
            kind=answer["kind"],
            pages=answer.get("pages"),
            chars=int(answer.get("chars") or 0),
            note=answer.get("note"),
            chunks=[(str(loc), str(text)) for loc, text in answer["chunks"]],
        )

    async def _discard(self, worker: Child) -> None:
        self._all.discard(worker)
        await worker.stop(kill=True)

    async def aclose(self) -> None:
        workers, self._all, self._idle = list(self._all), set(), []
        for worker in workers:
            await worker.stop()
