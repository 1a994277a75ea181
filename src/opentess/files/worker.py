"""An extraction worker: a child process that reads documents for the server (python -m
opentess.files.worker MEMORY_MB). It answers one request at a time on stdin/stdout (4-byte
big-endian length, then JSON) with the file's chunks or a message saying why it has none.

Why a process: the parsers are CPU-bound (the server's event loop must stay free), a hostile or
broken file can make a library loop or allocate without end, and only a process can be stopped
at any moment (its parent kills it past the time limit) and held to a memory limit
(RLIMIT_AS, set here before any document is read)."""

from __future__ import annotations

import logging
import resource
import sys
import warnings
from pathlib import Path
from typing import Any

from opentess.childproc import read_frame, write_frame
from opentess.files.chunking import chunk
from opentess.files.extract import ExtractionError, Limits, extract


def handle(request: dict[str, Any]) -> dict[str, Any]:
    limits = Limits(max_pages=int(request["max_pages"]), max_chars=int(request["max_chars"]))
    try:
        result = extract(Path(request["path"]), request["filename"], request["content_type"], limits)
    except ExtractionError as exc:
        return {"ok": False, "error": str(exc)}
    chunks = chunk(result.segments, int(request["chunk_chars"]), result.headers)
    return {
        "ok": True,
        "kind": result.kind,
        "pages": result.pages,
        "note": result.note,
        "chars": sum(len(c.text) for c in chunks),
        "chunks": [[c.location, c.text] for c in chunks],
    }


def main() -> None:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.disable(logging.CRITICAL)  # the parsers log about every odd file; the answer says what matters
    warnings.simplefilter("ignore")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (request := read_frame(stdin)) is not None:
        try:
            answer = handle(request)
        except MemoryError:
            write_frame(stdout, {"ok": False, "error": f"Reading the file needs more than {memory_mb} MiB of memory."})
            return  # a process that ran out of memory is not trusted with the next file
        except RecursionError:
            answer = {"ok": False, "error": "The file is nested too deeply to read."}
        write_frame(stdout, answer)


if __name__ == "__main__":
    main()
