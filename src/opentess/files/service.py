"""The files capability's one object per server process (or CLI command): its store, storage,
extraction pool, processor, retrieval and caches, and the operations the routes and the CLI
share — receiving files, signed uploads, deleting, processing, linking to agents."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.cache import TTLCache
from opentess.clock import utcnow
from opentess.errors import FileNotFound, InvalidInput, PayloadTooLarge
from opentess.files.embeddings import Embedder, embedder_for
from opentess.files.extraction import ExtractionPool
from opentess.files.memory import MemoryIndex
from opentess.files.processing import Processor
from opentess.files.reader import Reader
from opentess.files.search import FullText, Hit, VectorIndex
from opentess.files.storage import LocalStorage, Storage, check_key, make_storage, new_key
from opentess.files.store import PROCESS_JOB, WAITING, FileRecord, FileStore, Quotas, UploadRecord, clean_filename
from opentess.files.tables import FileChunk
from opentess.files.uploads import Form, receive_form, token_hash, upload_token
from opentess.jobs import JobKind
from opentess.providers import ModelRegistry
from opentess.settings import Settings

log = logging.getLogger("opentess.files")
MIB = 1024 * 1024
SWEEP_S = 600.0  # how often expired signed uploads and abandoned temporary files are removed
ABANDONED_S = 6 * 3600.0  # a temporary file this old belongs to a process that died
DEFAULT_TYPE = "application/octet-stream"


def _guess_type(filename: str) -> str:
    import mimetypes

    return mimetypes.guess_type(filename)[0] or DEFAULT_TYPE


class _TextCache:
    """Whole texts of small files, by (file id, generation), bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[tuple[int, int], str] = OrderedDict()
        self.bytes = 0

    def get(self, key: tuple[int, int]) -> str | None:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: tuple[int, int], value: str) -> None:
        size = len(value) * 2
        if size > self.max_bytes // 4:
            return
        self.items[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes and self.items:
            _, old = self.items.popitem(last=False)
            self.bytes -= len(old) * 2


class FilesService:
    def __init__(self, settings: Settings, engine: AsyncEngine, models: ModelRegistry | None = None) -> None:
        self.settings = settings
        self.models = models if models is not None else ModelRegistry(settings)
        self.store = FileStore(
            engine,
            Quotas(
                settings.files_workspace_max_files, settings.files_workspace_max_bytes, settings.files_agent_max_files
            ),
        )
        self.storage: Storage = make_storage(settings)
        self.pool = ExtractionPool(
            settings.files_extract_workers, settings.files_extract_memory_mb, settings.files_extract_timeout_s
        )
        self.embedder: Embedder | None = embedder_for(settings)
        self.reader = Reader(engine, settings.db_busy_timeout_s)
        self.fulltext = FullText(engine, self.reader)
        self.processor = Processor(self.store, self.storage, self.pool, settings, self.embedder, self.fulltext)
        cache = settings.files_cache_mb * MIB  # half for vectors, 3/8 for small knowledge's index, 1/8 for texts
        self.vectors = VectorIndex(engine, cache // 2)
        self.memory = MemoryIndex(engine, cache * 3 // 8)
        self._texts = _TextCache(cache // 8)
        self._linked: TTLCache[int, list[FileRecord]] = TTLCache(1.0)
        self._sweeper: asyncio.Task[None] | None = None

    def job_kind(self) -> JobKind:
        return JobKind(
            PROCESS_JOB,
            self.processor.handle,
            max_attempts=4,
            delays_s=(10, 60, 300),
            on_dead=self.processor.on_dead,
            lease_s=self.settings.files_job_lease_s,
        )

    def start(self) -> None:
        """Background upkeep of this process (the server's, not a CLI command's)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.pool.aclose()
        await self.reader.aclose()
        if self.embedder is not None:
            await self.embedder.aclose()
        await self.storage.aclose()

    # receiving --------------------------------------------------------------------------------------

    async def receive(
        self,
        *,
        workspace_id: int,
        user_id: int | None,
        content_type: str | None,
        content_length: int | None,
        body: AsyncIterator[bytes],
        parse_flag: Any,
    ) -> FileRecord:
        """``POST /files``: the form's file stored, then recorded (and queued for processing
        when ``process`` says so). Nothing stays stored when anything fails."""
        await self.store.check_room(workspace_id, max(0, (content_length or 0) - MULTIPART_SLACK))
        form = await receive_form(content_type, body, self.storage, self.settings.max_file_bytes)
        assert form.file is not None
        try:
            process = _process_flag(form, parse_flag)
            if form.file.size == 0:
                raise InvalidInput({"file": ["The file is empty."]})
            filename = clean_filename(form.file.filename)
            return await self.store.create(
                workspace_id=workspace_id,
                user_id=user_id,
                filename=filename,
                size=form.file.size,
                content_type=form.file.content_type or _guess_type(filename),
                storage_key=form.file.key,
                process=process,
            )
        except BaseException:
            await self.storage.delete(form.file.key)
            raise

    async def add(
        self,
        *,
        workspace_id: int,
        user_id: int | None,
        filename: str,
        pieces: AsyncIterator[bytes],
        process: bool,
        job_delay_s: float = 0.0,
    ) -> FileRecord:
        """A file from a byte stream (the CLI)."""
        await self.store.check_room(workspace_id, None)
        key = new_key()
        size = await self.storage.put(key, pieces)
        try:
            if size == 0:
                raise InvalidInput({"file": ["The file is empty."]})
            if size > self.settings.max_file_bytes:
                raise PayloadTooLarge(f"The file is larger than the limit of {self.settings.max_file_bytes:,} bytes.")
            name = clean_filename(filename)
            return await self.store.create(
                workspace_id=workspace_id, user_id=user_id, filename=name, size=size,
                content_type=_guess_type(name), storage_key=key, process=process, job_delay_s=job_delay_s,
            )  # fmt: skip
        except BaseException:
            await self.storage.delete(key)
            raise

    # signed uploads ---------------------------------------------------------------------------------

    async def sign(
        self, *, workspace_id: int, user_id: int | None, filename: str, content_type: str, size: int, base_url: str
    ) -> dict[str, Any]:
        """``POST /v2/files/sign``: where to PUT the bytes. On S3 a presigned URL of the bucket;
        on local storage a URL of this server whose secret token authorises the PUT."""
        if size > self.settings.max_file_bytes:
            raise PayloadTooLarge(
                f"The file is larger than the limit of {self.settings.max_file_bytes:,} bytes.", param="size"
            )
        await self.store.check_room(workspace_id, size)
        key = new_key("uploads")
        ttl = self.settings.files_upload_url_ttl_s
        url = await self.storage.presign_put(key, ttl)
        token = hashed = None
        if url is None:
            token, hashed = upload_token()
            url = f"{base_url}/v2/files/uploads/{token}"
        await self.store.create_upload(
            workspace_id=workspace_id, user_id=user_id, object_path=key, token_hash=hashed,
            filename=clean_filename(filename), content_type=content_type, size=size, ttl_s=ttl,
        )  # fmt: skip
        return {
            "upload_url": url,
            "object_path": key,
            "required_headers": {"Content-Type": content_type},
            "expires_in": int(ttl),
        }

    async def put_signed(self, token: str, body: AsyncIterator[bytes]) -> UploadRecord:
        """The PUT of a local signed upload: the token is the authorisation; the body goes to the
        upload's object, at most the declared size (or the server's limit)."""
        upload = await self.store.upload_by_token(token_hash(token))
        if upload is None:
            raise FileNotFound("Upload not found (unknown, expired or already registered)")
        if upload.expires_at < utcnow():
            raise FileNotFound("Upload not found (unknown, expired or already registered)")
        limit = min(max(upload.size, 1), self.settings.max_file_bytes)

        async def bounded() -> AsyncIterator[bytes]:
            received = 0
            async for piece in body:
                received += len(piece)
                if received > limit:
                    raise PayloadTooLarge(f"The body is larger than the {limit:,} bytes signed for.")
                yield piece

        await self.storage.put(upload.object_path, bounded())
        return upload

    async def register(
        self, *, workspace_id: int, user_id: int | None, object_path: str, filename: str | None,
        content_type: str | None, process: bool,
    ) -> FileRecord:  # fmt: skip
        """``POST /v2/files/register``: the uploaded object becomes a file."""
        try:
            check_key(object_path)
        except ValueError:
            raise InvalidInput({"object_path": ["The object_path is not one this server signed."]}) from None
        upload = await self.store.upload_by_path(object_path, workspace_id)
        if upload is None:
            # registered already (a client retrying after a lost answer): the file it became;
            # only signed uploads' keys (``uploads/…``), not those of files uploaded directly
            if object_path.startswith("uploads/"):
                registered = await self.store.registered(object_path, workspace_id)
                if registered is not None:
                    return registered
            raise InvalidInput({"object_path": ["The object_path is not one this server signed (or it expired)."]})
        try:
            size = await self.storage.size(object_path)
        except FileNotFoundError:
            raise InvalidInput(
                {"object_path": ["Nothing was uploaded to this object_path yet; PUT the file to upload_url first."]}
            ) from None
        problem: Exception | None = None
        if size == 0:
            problem = InvalidInput({"file": ["The file is empty."]})
        elif size > self.settings.max_file_bytes:
            problem = PayloadTooLarge(f"The file is larger than the limit of {self.settings.max_file_bytes:,} bytes.")
        if problem is not None:
            await self.storage.delete(object_path)
            await self.store.forget_upload(upload.id)
            raise problem
        name = clean_filename(filename) if filename else upload.filename
        try:
            return await self.store.create(
                workspace_id=workspace_id, user_id=user_id, filename=name, size=size,
                content_type=content_type or upload.content_type, storage_key=object_path, process=process,
                upload_id=upload.id,
            )  # fmt: skip
        except PayloadTooLarge:
            await self.storage.delete(object_path)
            await self.store.forget_upload(upload.id)
            raise

    # files ------------------------------------------------------------------------------------------

    async def delete(self, file_id: int, workspace_id: int | None) -> FileRecord:
        record = await self.store.delete(file_id, workspace_id)
        self._linked.clear()
        try:
            await self.storage.delete(record.storage_key)
        except Exception:  # the file is gone for the API; the object is only wasted space
            log.exception("file %s: could not delete its object %s", file_id, record.storage_key)
        return record

    async def process(self, file_id: int, workspace_id: int | None) -> FileRecord:
        """``POST /files/{id}/process``: process it (again, unless it is waiting already)."""
        record = await self.store.get(file_id, workspace_id)
        await self.store.request_processing([record.id], again=True)
        return await self.store.get(file_id, workspace_id)

    async def wait_for(self, file_ids: Iterable[int], timeout_s: float) -> dict[int, FileRecord]:
        """The files once none is waiting, or as they are when ``timeout_s`` has passed."""
        ids = list(file_ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            records = await self.store.many(ids)
            if all(r.status != WAITING for r in records.values()) or loop.time() >= deadline:
                return records
            event = self.processor.finished
            # woken when this process ends a file; polling finds those other processes end
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=max(0.0, min(0.25, deadline - loop.time())))

    # agents' files --------------------------------------------------------------------------------------

    async def linked(self, agent_id: int) -> list[FileRecord]:
        """The agent's files (cached for a second, as agents are: an execution reads no database
        for an agent without files)."""
        return await self._linked.get_or_load(agent_id, lambda: self.store.agent_files(agent_id))

    async def link(self, agent_id: int, workspace_id: int, file_ids: list[int]) -> list[FileRecord]:
        found = await self.store.many(file_ids, workspace_id)
        missing = [i for i in file_ids if i not in found]
        if missing:
            raise FileNotFound(f"File {missing[0]} not found")
        await self.store.link(agent_id, file_ids)
        self._linked.discard(agent_id)
        await self.store.request_processing(file_ids)  # stored without processing: extracted now
        return await self.store.agent_files(agent_id)

    async def unlink(self, agent_id: int, workspace_id: int, file_id: int) -> FileRecord:
        record = await self.store.get(file_id, workspace_id)
        if not await self.store.unlink(agent_id, file_id):
            raise FileNotFound("File not linked to this agent")
        self._linked.discard(agent_id)
        return record

    # text for the context ----------------------------------------------------------------------------

    async def whole_text(self, record: FileRecord) -> str:
        key = (record.id, record.generation)
        cached = self._texts.get(key)
        if cached is not None:
            return cached
        stmt = select(FileChunk.text).where(FileChunk.file_id == record.id).order_by(FileChunk.ordinal)
        async with self.store.engine.connect() as conn:
            text = "\n\n".join((await conn.execute(stmt)).scalars())
        self._texts.put(key, text)
        return text

    async def chunks(self, chunk_ids: list[int]) -> dict[int, Hit]:
        if not chunk_ids:
            return {}
        stmt = select(
            FileChunk.id, FileChunk.file_id, FileChunk.ordinal, FileChunk.location, FileChunk.text, FileChunk.tokens
        ).where(FileChunk.id.in_(chunk_ids))
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {r[0]: Hit(r[0], r[1], r[2], r[3], r[4], r[5], 0.0) for r in rows}

    # upkeep -------------------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Remove signed uploads that expired unregistered (their objects too) and abandoned
        temporary files. Any process may do it at any time: it is idempotent."""
        removed = 0
        for upload in await self.store.expired_uploads():
            await self.storage.delete(upload.object_path)
            await self.store.forget_upload(upload.id)
            removed += 1
        if isinstance(self.storage, LocalStorage):
            await asyncio.to_thread(self.storage.sweep_temporary, ABANDONED_S)
        await asyncio.to_thread(_sweep_dir, self.processor.work_dir, ABANDONED_S)
        return removed

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweeping expired uploads failed; retrying later")


MULTIPART_SLACK = 64 * 1024  # what a form's boundaries and other parts take, at most, in practice


def _process_flag(form: Form, parse_flag: Any) -> bool:
    raw = form.fields.get("process")
    if raw is None or raw.strip() == "":
        return False  # absent (MCP clients send only `file`): stored now, extracted on first use
    value = parse_flag(raw)
    if value is None:
        raise InvalidInput({"process": ["The process field must be true or false."]})
    return bool(value)


def _sweep_dir(directory: Path, older_than_s: float) -> None:
    if not directory.is_dir():
        return
    limit = time.time() - older_than_s
    for entry in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_mtime < limit:
                entry.unlink()
