"""The files capability's tables (imported by opentess.db.models, so that migrations see them).

Besides these, the migration keeps two objects outside the models on SQLite: the FTS5 index of
the chunks (``file_chunks_fts``, an external-content table kept in step by triggers) and its
vocabulary view (``file_chunks_fts_vocab``, document frequencies for choosing query terms).
``opentess.db.models.UNMANAGED_TABLE_PREFIXES`` names them for Alembic's comparisons."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from opentess.db.models import Base, IdType

# PostgreSQL's full-text vector of a chunk; the column exists on SQLite too (always NULL there,
# where the FTS5 index does the same job), so that both databases have one schema
SearchVector = Text().with_variant(TSVECTOR(), "postgresql")


class File(Base):
    """An uploaded file. ``status``: waiting (queued or processing) → completed | failed; a file
    stored without processing is ``completed`` with ``processed_at`` NULL (extracted on first use).
    ``generation`` counts processing requests: a job works for one generation, so a job left
    from an earlier request (or a deleted file) changes nothing."""

    __tablename__ = "files"
    # ids are never reused (SQLite would reuse the highest one after a delete): a client's id
    # of a deleted file, or an execution's record of it, must never name another file
    __table_args__ = (Index("ix_files_workspace_id", "workspace_id", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(IdType, ForeignKey("workspaces.id"))
    user_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("users.id"))
    filename: Mapped[str] = mapped_column(String(255))  # sanitized for display; never in a path
    bytes: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(200))  # as declared by the client
    storage_key: Mapped[str] = mapped_column(String(300), unique=True)  # generated, never the name
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(20))  # the sniffed format: pdf, docx, csv, …
    pages: Mapped[int | None] = mapped_column(Integer)
    chars: Mapped[int | None] = mapped_column(Integer)
    tokens: Mapped[int | None] = mapped_column(Integer)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    credits: Mapped[float] = mapped_column(Float, default=0.0)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class FileChunk(Base):
    """A piece of a file's extracted text, labelled with where it comes from ("page 3")."""

    __tablename__ = "file_chunks"
    __table_args__ = (
        Index("ix_file_chunks_file", "file_id", "ordinal"),
        Index("ix_file_chunks_search", "search_vector", postgresql_using="gin"),
        {"sqlite_autoincrement": True},  # executions record chunk ids: never reused
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    file_id: Mapped[int] = mapped_column(IdType, ForeignKey("files.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    location: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(Integer)
    search_vector: Mapped[str | None] = mapped_column(SearchVector)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32, unit length


class AgentFile(Base):
    """A file linked to an agent: part of the agent's knowledge."""

    __tablename__ = "agent_files"
    __table_args__ = (Index("ix_agent_files_file", "file_id"),)

    agent_id: Mapped[int] = mapped_column(IdType, ForeignKey("agents.id"), primary_key=True)
    file_id: Mapped[int] = mapped_column(IdType, ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class FileUpload(Base):
    """A signed upload (``POST /v2/files/sign``) until it is registered or expires. On local
    storage the client PUTs to the server with the token whose hash is kept here."""

    __tablename__ = "file_uploads"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(IdType, ForeignKey("workspaces.id"))
    user_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("users.id"))
    object_path: Mapped[str] = mapped_column(String(300), unique=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
