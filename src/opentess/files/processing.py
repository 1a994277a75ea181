"""Processing one file: the handler of the ``files.process`` job.

Copy the object to a local work file, extract and chunk it in a worker process, embed the
chunks when an embedding model is configured, then store the chunks and mark the file
``completed`` in one transaction — or ``failed`` with a message for a person when the file has
no text to give (that is final: trying again would find the same). Anything else (storage or
database unreachable, the embedding upstream down) fails the attempt, and the job runs again
after its backoff; when no attempt is left the file ends ``failed`` (``on_dead``). A file can
therefore never stay ``waiting``: its job runs after a restart, and once across processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import numpy as np

from opentess.errors import UpstreamError
from opentess.files.embeddings import Embedder
from opentess.files.extract import ExtractionError
from opentess.files.extraction import Extraction, ExtractionPool
from opentess.files.search import FullText, fold
from opentess.files.storage import Storage
from opentess.files.store import WAITING, ChunkRow, FileStore
from opentess.jobs import Job, JobContext
from opentess.settings import Settings

log = logging.getLogger("opentess.files")
MIB = 1024 * 1024


def estimate_tokens(text: str) -> int:
    """Four characters a token: what budgets count in (no tokenizer per model)."""
    return (len(text) + 3) // 4


class Processor:
    def __init__(
        self,
        store: FileStore,
        storage: Storage,
        pool: ExtractionPool,
        settings: Settings,
        embedder: Embedder | None,
        fulltext: FullText | None = None,
    ) -> None:
        self.store = store
        self.fulltext = fulltext
        self.storage = storage
        self.pool = pool
        self.settings = settings
        self.embedder = embedder
        self.work_dir = settings.data_dir / "files" / "work"
        self.finished: asyncio.Event = asyncio.Event()  # set whenever a file of this process ends

    def _ended(self) -> None:
        self.finished.set()
        self.finished = asyncio.Event()

    async def handle(self, job: Job, _context: JobContext) -> None:
        file_id, generation = int(job.payload["file_id"]), int(job.payload["generation"])
        records = await self.store.many([file_id])
        record = records.get(file_id)
        stale = record is None or record.storage_key != job.payload.get("key", record.storage_key)
        if stale or record is None or record.generation != generation or record.status != WAITING:
            return  # deleted, asked again since, or done by an earlier attempt
        await asyncio.to_thread(self.work_dir.mkdir, parents=True, exist_ok=True)
        work = self.work_dir / f"{uuid.uuid4().hex}.bin"
        try:
            try:
                await self.storage.download(record.storage_key, work)
            except FileNotFoundError:
                await self._fail(file_id, generation, "The file's content is missing from storage.")
                return
            try:
                extraction = await self.pool.extract(
                    work,
                    record.filename,
                    record.content_type,
                    max_pages=self.settings.files_max_pages,
                    max_chars=self.settings.files_max_chars,
                    chunk_chars=self.settings.files_chunk_tokens * 4,
                )
            except ExtractionError as exc:
                await self._fail(file_id, generation, str(exc))
                return
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(work.unlink)
        vectors, model = await self._embed(extraction, job)
        rows = [
            ChunkRow(
                location, body, estimate_tokens(body), fold(body), vectors[n].tobytes() if vectors is not None else None
            )
            for n, (location, body) in enumerate(extraction.chunks)
        ]
        mib = record.bytes / MIB
        credits = (
            mib * self.settings.files_credits_per_mb + (extraction.pages or 0) * self.settings.files_credits_per_page
        )
        values = {
            "kind": extraction.kind,
            "pages": extraction.pages,
            "chars": extraction.chars,
            "tokens": sum(r.tokens for r in rows),
            "credits": round(credits, 6),
            "embedding_model": model,
            "error": extraction.note,  # what the limits left out, shown beside a completed file
        }
        if await self.store.complete(file_id, generation, rows, values):
            if self.fulltext is not None:
                await self.fulltext.refresh_statistics()
            self._ended()
            log.info("file %s processed: %s, %d chunk(s)", file_id, extraction.kind, len(rows))

    async def _embed(self, extraction: Extraction, job: Job) -> tuple[np.ndarray | None, str | None]:
        if self.embedder is None or not extraction.chunks:
            return None, None
        try:
            return await self.embedder.embed([body for _, body in extraction.chunks]), self.embedder.name
        except UpstreamError as exc:
            if not job.last_attempt:
                raise  # the job runs again after its backoff
            # the last attempt: the file is still searchable by its text; processing it again
            # (POST /files/{id}/process) adds the vectors once the model answers
            log.warning("file %s: no embeddings (%s); it is searchable by full text only", job.payload, exc)
            return None, None

    async def _fail(self, file_id: int, generation: int, message: str) -> None:
        if await self.store.fail(file_id, generation, message):
            self._ended()
            log.info("file %s failed: %s", file_id, message)

    async def on_dead(self, job: Job, _context: JobContext, error: str) -> None:
        """Every attempt failed: the file ends ``failed`` (never ``waiting`` for ever)."""
        await self._fail(
            int(job.payload["file_id"]),
            int(job.payload["generation"]),
            f"Processing failed {job.attempts} times; the last error: {error}",
        )
