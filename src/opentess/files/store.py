"""Files, agents' linked files and signed uploads, scoped to a workspace: another workspace's
file is exactly a missing one (FileNotFound, 404).

Processing is requested in the transaction that changes the file's status, with the job that
does it (opentess.jobs): a file is ``waiting`` if and only if a job for its current generation
exists. The chunks and the file's end state are written in one transaction, fenced by the
generation, so a job that lost its file (deleted, or asked to process again) changes nothing."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, insert, literal_column, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentess.clock import utcnow
from opentess.db.locking import conflict_insert, is_foreign_key_error, lock_parent
from opentess.db.models import Agent, Workspace
from opentess.errors import FileNotFound, InvalidInput, PayloadTooLarge
from opentess.files.tables import AgentFile, File, FileChunk, FileUpload
from opentess.jobs import enqueue

WAITING, COMPLETED, FAILED = "waiting", "completed", "failed"
PROCESS_JOB = "files.process"
MAX_FILENAME = 255
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def clean_filename(raw: str | None) -> str:
    """A file name fit to show: its last path component (either slash), without control or
    bidirectional-override characters, NFC, at most 255 characters; "file" when nothing is left.
    It is shown and stored, never used in a path (storage keys are generated)."""
    name = unicodedata.normalize("NFC", raw or "")
    name = PureWindowsPath(PurePosixPath(name.replace("\\", "/")).name).name
    name = _UNSAFE.sub("", name).strip().strip(".").strip()
    if len(name) > MAX_FILENAME:
        stem, dot, suffix = name.rpartition(".")
        keep_suffix = dot and len(suffix) < 16
        name = (stem[: MAX_FILENAME - len(suffix) - 1] + dot + suffix) if keep_suffix else name[:MAX_FILENAME]
    return name or "file"


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: int
    workspace_id: int
    user_id: int | None
    filename: str
    bytes: int
    content_type: str
    storage_key: str
    status: str
    error: str | None
    kind: str | None
    pages: int | None
    chars: int | None
    tokens: int | None
    chunks: int
    credits: float
    generation: int
    embedding_model: str | None
    processed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def processed(self) -> bool:
        return self.processed_at is not None

    @property
    def ready(self) -> bool:
        """Its text can be used."""
        return self.status == COMPLETED and self.processed_at is not None


@dataclass(frozen=True, slots=True)
class UploadRecord:
    id: int
    workspace_id: int
    user_id: int | None
    object_path: str
    filename: str
    content_type: str
    size: int
    expires_at: datetime


_FILE_FIELDS = [f.name for f in fields(FileRecord)]
_FILE_COLUMNS = [File.__table__.c[name] for name in _FILE_FIELDS]


def _file(row: Any) -> FileRecord:
    r = row._mapping
    return FileRecord(**{name: r[name] for name in _FILE_FIELDS})


def _upload(row: Any) -> UploadRecord:
    r = row._mapping
    return UploadRecord(
        r["id"], r["workspace_id"], r["user_id"], r["object_path"], r["filename"], r["content_type"], r["size"],
        r["expires_at"],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Quotas:
    max_files: int
    max_bytes: int
    agent_max_files: int


@dataclass(frozen=True, slots=True)
class ChunkRow:
    location: str
    text: str
    tokens: int
    search_text: str  # the text as indexed on PostgreSQL (diacritics folded)
    embedding: bytes | None = None


class FileStore:
    def __init__(self, engine: AsyncEngine, quotas: Quotas) -> None:
        self.engine = engine
        self.quotas = quotas
        self.postgres = engine.dialect.name == "postgresql"
        # called after a commit that enqueued processing: wakes this process's job runner
        self.wake: Callable[[], None] = lambda: None

    def _select(self) -> Select[Any]:
        return select(*_FILE_COLUMNS)

    # reading ------------------------------------------------------------------------------------

    async def get(self, file_id: int, workspace_id: int | None) -> FileRecord:
        stmt = self._select().where(File.id == file_id)
        if workspace_id is not None:
            stmt = stmt.where(File.workspace_id == workspace_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise FileNotFound()
        return _file(row)

    async def many(self, file_ids: Sequence[int], workspace_id: int | None = None) -> dict[int, FileRecord]:
        """The files of these ids that exist (in this workspace), by id."""
        if not file_ids:
            return {}
        stmt = self._select().where(File.id.in_(list(file_ids)))
        if workspace_id is not None:
            stmt = stmt.where(File.workspace_id == workspace_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {record.id: record for record in map(_file, rows)}

    async def search(
        self, workspace_id: int | None, *, descending: bool, offset: int, limit: int
    ) -> tuple[list[FileRecord], int]:
        conditions = [] if workspace_id is None else [File.workspace_id == workspace_id]
        order = File.id.desc() if descending else File.id.asc()
        async with self.engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(File).where(*conditions))).scalar_one()
            page = self._select().where(*conditions).order_by(order).offset(offset).limit(limit)
            rows = (await conn.execute(page)).all()
        return [_file(r) for r in rows], int(total)

    async def usage(self, workspace_id: int) -> tuple[int, int]:
        """(files, bytes) the workspace holds."""
        async with self.engine.connect() as conn:
            return await _usage(conn, workspace_id)

    async def check_room(self, workspace_id: int, incoming_bytes: int | None) -> None:
        """Refuse early an upload the workspace has no room for (checked again, exactly, when
        the file is recorded)."""
        count, total = await self.usage(workspace_id)
        self._check(count + 1, total + (incoming_bytes or 0))

    def _check(self, count: int, total: int) -> None:
        if count > self.quotas.max_files:
            raise InvalidInput(
                {"file": [f"The workspace holds its limit of {self.quotas.max_files} files; delete some first."]}
            )
        if total > self.quotas.max_bytes:
            raise PayloadTooLarge(
                f"The workspace's files would take {total:,} bytes; its limit is {self.quotas.max_bytes:,} bytes.",
                param="file",
            )

    # writing --------------------------------------------------------------------------------------

    async def create(
        self,
        *,
        workspace_id: int,
        user_id: int | None,
        filename: str,
        size: int,
        content_type: str,
        storage_key: str,
        process: bool,
        upload_id: int | None = None,
        job_delay_s: float = 0.0,
    ) -> FileRecord:
        """Record a stored object as a file; with ``process``, its job is enqueued with it
        (``job_delay_s`` later: the CLI processes the file itself, and the job finishes the work
        only if the command did not). The workspace's limits are checked in the same
        transaction (serialised per workspace)."""
        now = utcnow()
        content_type, status, generation = content_type[:200], WAITING if process else COMPLETED, 1 if process else 0
        values = {
            "workspace_id": workspace_id, "user_id": user_id, "filename": filename, "bytes": size,
            "content_type": content_type, "storage_key": storage_key, "status": status, "chunks": 0, "credits": 0.0,
            "generation": generation, "created_at": now, "updated_at": now,
        }  # fmt: skip
        async with self.engine.begin() as conn:
            # concurrent uploads to a workspace are serialised so that the count below is exact
            # (opentess.db.locking)
            await lock_parent(conn, Workspace.id, workspace_id)
            if upload_id is not None:
                # a signed upload becomes a file once: a retried or concurrent register of the
                # same upload finds it gone and answers with the file the first one made
                taken = await conn.execute(delete(FileUpload).where(FileUpload.id == upload_id))
                if taken.rowcount != 1:
                    existing = await self._by_key(conn, storage_key, workspace_id)
                    if existing is None:
                        raise InvalidInput({"object_path": ["This upload was registered or has expired."]})
                    return existing
            file_id = (await conn.execute(insert(File).values(**values).returning(File.id))).scalar_one()
            self._check(*await _usage(conn, workspace_id))
            if process:
                await _enqueue(conn, file_id, storage_key, 1, job_delay_s)
        if process:
            self.wake()
        return FileRecord(
            id=file_id, workspace_id=workspace_id, user_id=user_id, filename=filename, bytes=size,
            content_type=content_type, storage_key=storage_key, status=status, error=None,
            kind=None, pages=None, chars=None, tokens=None, chunks=0, credits=0.0, generation=generation,
            embedding_model=None, processed_at=None, created_at=now, updated_at=now,
        )  # fmt: skip

    async def request_processing(self, file_ids: Sequence[int], *, again: bool = False) -> list[int]:
        """Enqueue processing of the files stored without it (first use); with ``again``, of
        every file not waiting already (failed ones, and processed ones: processed anew).
        Returns the ids that were enqueued."""
        condition = File.status != WAITING if again else (File.status == COMPLETED) & File.processed_at.is_(None)
        enqueued: list[int] = []
        if not file_ids:
            return enqueued
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    update(File)
                    .where(File.id.in_(list(file_ids)), condition)
                    .values(status=WAITING, error=None, generation=File.generation + 1, updated_at=utcnow())
                    .returning(File.id, File.storage_key, File.generation)
                )
            ).all()
            for file_id, key, generation in rows:
                await _enqueue(conn, int(file_id), str(key), int(generation))
                enqueued.append(int(file_id))
        if enqueued:
            self.wake()
        return enqueued

    async def delete(self, file_id: int, workspace_id: int | None) -> FileRecord:
        """Remove a file, its chunks and its links to agents (executions that used it keep
        their record). The caller removes the stored object."""
        record = await self.get(file_id, workspace_id)
        async with self.engine.begin() as conn:
            # the file's row first, as ``complete`` takes it: a file deleted while its chunks are
            # being stored waits for them instead of deadlocking with them (PostgreSQL)
            await lock_parent(conn, File.id, file_id)
            await conn.execute(delete(AgentFile).where(AgentFile.file_id == file_id))
            await conn.execute(delete(FileChunk).where(FileChunk.file_id == file_id))
            await conn.execute(delete(File).where(File.id == file_id))
        return record

    # processing ---------------------------------------------------------------------------------------

    async def fail(self, file_id: int, generation: int, error: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(File)
                .where(File.id == file_id, File.generation == generation, File.status == WAITING)
                .values(status=FAILED, error=error[:2000], updated_at=utcnow())
            )
        return result.rowcount == 1

    async def complete(self, file_id: int, generation: int, chunks: Sequence[ChunkRow], values: dict[str, Any]) -> bool:
        """Store the chunks and mark the file completed, in one transaction, only if the file
        still waits for this generation. False when it does not (nothing is changed)."""
        now = utcnow()
        async with self.engine.begin() as conn:
            # the fence first: it also locks the file's row (PostgreSQL) or the database
            # (SQLite), so a second attempt of the same generation finds it completed
            fenced = await conn.execute(
                update(File)
                .where(File.id == file_id, File.generation == generation, File.status == WAITING)
                .values({"status": COMPLETED, "error": None, "chunks": len(chunks), "processed_at": now,
                         "updated_at": now, **values})
            )  # fmt: skip
            if fenced.rowcount != 1:
                return False
            await conn.execute(delete(FileChunk).where(FileChunk.file_id == file_id))  # an interrupted attempt's
            rows = [
                {"file_id": file_id, "ordinal": n, "location": c.location[:200], "text": c.text, "tokens": c.tokens,
                 "embedding": c.embedding, "folded": c.search_text}
                for n, c in enumerate(chunks)
            ]  # fmt: skip
            if self.postgres:
                vector: Any = func.to_tsvector(literal_column("'simple'"), bindparam("folded"))
            else:
                vector = None  # SQLite indexes the text itself (file_chunks_fts, by trigger)
            stmt = insert(FileChunk).values(
                file_id=bindparam("file_id"), ordinal=bindparam("ordinal"), location=bindparam("location"),
                text=bindparam("text"), tokens=bindparam("tokens"), embedding=bindparam("embedding"),
                search_vector=vector,
            )  # fmt: skip
            for start in range(0, len(rows), 500):
                await conn.execute(stmt, rows[start : start + 500])
        return True

    # agents' files --------------------------------------------------------------------------------------

    async def agent_files(self, agent_id: int) -> list[FileRecord]:
        stmt = (
            self._select()
            .join(AgentFile, AgentFile.file_id == File.id)
            .where(AgentFile.agent_id == agent_id)
            .order_by(AgentFile.created_at, File.id)
        )
        async with self.engine.connect() as conn:
            return [_file(r) for r in (await conn.execute(stmt)).all()]

    async def link(self, agent_id: int, file_ids: Sequence[int]) -> None:
        """Link the files to the agent (those linked already stay as they are). Concurrent links
        to one agent are serialised (opentess.db.locking), so its limit holds; a file deleted
        meanwhile is FileNotFound."""
        now = utcnow()
        try:
            async with self.engine.begin() as conn:
                await lock_parent(conn, Agent.id, agent_id)
                # the first write (SQLite: it takes the write lock, so the count below is exact)
                add = conflict_insert(conn.dialect.name, AgentFile).on_conflict_do_nothing()
                rows = [{"agent_id": agent_id, "file_id": f, "created_at": now} for f in sorted(set(file_ids))]
                if rows:
                    await conn.execute(add, rows)
                count = (await conn.execute(select(func.count()).where(AgentFile.agent_id == agent_id))).scalar_one()
                if count > self.quotas.agent_max_files:
                    raise InvalidInput(
                        {"file_ids": [
                            f"An agent holds at most {self.quotas.agent_max_files} files; this would make {count}."
                        ]}
                    )  # fmt: skip
        except IntegrityError as exc:
            if is_foreign_key_error(exc):
                raise FileNotFound("One of the files was deleted meanwhile.") from None
            raise

    async def unlink(self, agent_id: int, file_id: int) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(AgentFile).where(AgentFile.agent_id == agent_id, AgentFile.file_id == file_id)
            )
        return result.rowcount == 1

    # signed uploads -------------------------------------------------------------------------------------

    async def create_upload(
        self,
        *,
        workspace_id: int,
        user_id: int | None,
        object_path: str,
        token_hash: str | None,
        filename: str,
        content_type: str,
        size: int,
        ttl_s: float,
    ) -> UploadRecord:
        now = utcnow()
        expires_at = now + timedelta(seconds=ttl_s)
        content_type = content_type[:200]
        values = {
            "workspace_id": workspace_id, "user_id": user_id, "object_path": object_path, "token_hash": token_hash,
            "filename": filename, "content_type": content_type, "size": size, "expires_at": expires_at,
            "created_at": now,
        }  # fmt: skip
        async with self.engine.begin() as conn:
            upload_id = (await conn.execute(insert(FileUpload).values(**values).returning(FileUpload.id))).scalar_one()
        return UploadRecord(upload_id, workspace_id, user_id, object_path, filename, content_type, size, expires_at)

    async def upload_by_token(self, token_hash: str) -> UploadRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(FileUpload).where(FileUpload.token_hash == token_hash))).first()
        return _upload(row) if row is not None else None

    async def registered(self, object_path: str, workspace_id: int) -> FileRecord | None:
        """The file a signed upload became, if it was registered."""
        async with self.engine.connect() as conn:
            return await self._by_key(conn, object_path, workspace_id)

    async def _by_key(self, conn: AsyncConnection, storage_key: str, workspace_id: int) -> FileRecord | None:
        stmt = self._select().where(File.storage_key == storage_key, File.workspace_id == workspace_id)
        row = (await conn.execute(stmt)).first()
        return _file(row) if row is not None else None

    async def upload_by_path(self, object_path: str, workspace_id: int) -> UploadRecord | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(FileUpload).where(
                        FileUpload.object_path == object_path, FileUpload.workspace_id == workspace_id
                    )
                )
            ).first()
        return _upload(row) if row is not None else None

    async def expired_uploads(self, limit: int = 100) -> list[UploadRecord]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(FileUpload).where(FileUpload.expires_at < utcnow()).limit(limit))).all()
        return [_upload(r) for r in rows]

    async def forget_upload(self, upload_id: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(FileUpload).where(FileUpload.id == upload_id))


async def _usage(conn: AsyncConnection, workspace_id: int) -> tuple[int, int]:
    count, total = (
        await conn.execute(
            select(func.count(), func.coalesce(func.sum(File.bytes), 0)).where(File.workspace_id == workspace_id)
        )
    ).one()
    return int(count), int(total)


async def _enqueue(conn: AsyncConnection, file_id: int, key: str, generation: int, delay_s: float = 0.0) -> None:
    # keyed by the file's storage key, unique to it, with the generation: run once per request
    await enqueue(
        conn, PROCESS_JOB, {"file_id": file_id, "key": key, "generation": generation},
        dedupe_key=f"{PROCESS_JOB}:{key}:{generation}", delay_s=delay_s,
    )  # fmt: skip
