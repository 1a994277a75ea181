"""The schema. Queries go through SQLAlchemy Core statements in ``opentess.store`` (one round trip,
no identity-map bookkeeping on the hot path); these classes define the tables and Alembic reads them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT on PostgreSQL, but INTEGER on SQLite so that ids are rowid aliases and autoincrement.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # a workspace id, kept without a foreign key to avoid a users<->workspaces cycle; null only
    # for the instant between creating the user and their personal workspace
    default_workspace_id: Mapped[int | None] = mapped_column(IdType)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    # the console's sign-in (Argon2; opentess.web.passwords); None: the user cannot sign in
    password_hash: Mapped[str | None] = mapped_column(String(255))


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id"), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(IdType, ForeignKey("workspaces.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), default="member")
    created_at: Mapped[datetime] = mapped_column(DateTime)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex of the secret
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to recognise a token in lists
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    # per-token rate limits; NULL means the server-wide default
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    # the token that created this one through the API (None: made by the operator); revoking a
    # token revokes every token it made, and theirs
    parent_id: Mapped[int | None] = mapped_column(IdType, index=True)


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (
        Index("ix_agents_workspace_deleted", "workspace_id", "deleted_at"),
        # a slug names one live agent of a workspace (`agents apply` finds agents by it)
        Index(
            "uq_agents_workspace_slug",
            "workspace_id",
            "slug",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(IdType, ForeignKey("workspaces.id"))
    title: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(220))
    description: Mapped[str] = mapped_column(Text, default="")
    long_description: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[str] = mapped_column(String(20), default="private")
    active: Mapped[int] = mapped_column(Integer, default=1)
    type: Mapped[str] = mapped_column(String(10), default="chat")
    instructions: Mapped[str] = mapped_column(Text, default="")
    questions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # the longest answer of a run when the caller asks none (None: the model's default)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    # deleting an agent hides it but keeps its executions readable
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_workspace_id", "workspace_id", "id"),
        Index("ix_executions_root_id", "root_id", "id"),
        Index("ix_executions_agent_id", "agent_id", "id"),
        Index("ix_executions_status", "status"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(IdType, ForeignKey("workspaces.id"))
    agent_id: Mapped[int] = mapped_column(IdType, ForeignKey("agents.id"))
    user_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("users.id"))
    token_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("api_tokens.id"))
    root_id: Mapped[int | None] = mapped_column(IdType)
    source: Mapped[str] = mapped_column(String(20))  # "openai" | "execute"
    # the server process running it; a run whose process is gone is failed by the reaper
    instance_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(20))
    input: Mapped[str] = mapped_column(Text, default="")
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    credits: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(20))
    # the caller's own turns (user/assistant, after normalisation): what a conversation replays
    turns: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # everything sent to the model: rendered instructions, history, the caller's messages
    messages: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # validated inputs and sampling parameters (temperature, tools, custom fields, max_tokens…)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # what each context source contributed: {"instructions": {...}, "conversation": {...}, …}
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # a toolset's operations: {"index", "tool", "arguments", "duration_ms", "result_chars", "error"}
    steps: Mapped[list[Any] | None] = mapped_column(JSON)
    # the sources a toolset found, numbered as the answer cites them: {"index", "title", "url", "snippet"}
    sources: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Job(Base):
    """Durable background work (opentess.jobs): queued → running (leased) → done | queued again
    (a retry, later) | dead."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_due", "status", "run_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    run_at: Mapped[datetime] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=0)  # 0: the kind's own
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    # enqueueing the same logical job twice is a no-op
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class ServerInstance(Base):
    """A live server process, kept fresh by its heartbeat."""

    __tablename__ = "server_instances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime)


# the capabilities' own tables, defined beside their code (imported last: they use Base)
from opentess.files import tables as files_tables  # noqa: E402
from opentess.memories import tables as memories_tables  # noqa: E402
from opentess.web import tables as web_tables  # noqa: E402
from opentess.webhooks import tables as webhooks_tables  # noqa: E402

# tables a capability's migration keeps outside these models (SQLite's FTS5 index of file chunks
# and its shadow tables): Alembic's comparisons leave them out (migrations/env.py, the tests)
UNMANAGED_TABLE_PREFIXES: tuple[str, ...] = ("file_chunks_fts",)  # opentess.files (migration 0007_files)


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Alembic's ``include_name`` hook: False for the tables the models do not manage."""
    return not (type_ == "table" and name is not None and name.startswith(UNMANAGED_TABLE_PREFIXES))


__all__ = ["Base", "files_tables", "include_name", "memories_tables", "web_tables", "webhooks_tables"]
