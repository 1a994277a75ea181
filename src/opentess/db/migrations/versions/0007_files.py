"""Files and knowledge (opentess.files): files, their chunks and full-text index, agents' linked
files, signed uploads.

The full-text index differs by database. PostgreSQL: a tsvector column with a GIN index (both in
the models). SQLite: an FTS5 table over the chunks' text (external content, kept in step by
triggers) and its fts5vocab view, created here with raw DDL and left out of Alembic's
comparisons (opentess.db.models.UNMANAGED_TABLE_PREFIXES). A later batch migration that
rebuilds ``file_chunks`` on SQLite must create the triggers again.

Revision ID: 0007_files
Revises: 0006_jobs
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TSVECTOR

revision: str = "0007_files"
down_revision: str | None = "0006_jobs"
branch_labels: str | Sequence[str] | None = ("files",)
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SEARCH_VECTOR = sa.Text().with_variant(TSVECTOR(), "postgresql")

SQLITE_FTS = (
    # unicode61 with diacritics removed: "cafe" finds "café"
    "CREATE VIRTUAL TABLE file_chunks_fts USING fts5(text, content='file_chunks', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE VIRTUAL TABLE file_chunks_fts_vocab USING fts5vocab(file_chunks_fts, 'row')",
    "CREATE TRIGGER file_chunks_fts_insert AFTER INSERT ON file_chunks BEGIN "
    "INSERT INTO file_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER file_chunks_fts_delete AFTER DELETE ON file_chunks BEGIN "
    "INSERT INTO file_chunks_fts(file_chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
)


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", ID, primary_key=True),
        sa.Column("workspace_id", ID, sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("storage_key", sa.String(300), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(20), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("chars", sa.Integer(), nullable=True),
        sa.Column("tokens", sa.Integer(), nullable=True),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("credits", sa.Float(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("embedding_model", sa.String(200), nullable=True),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sqlite_autoincrement=True,  # ids are never reused
    )
    op.create_index("ix_files_workspace_id", "files", ["workspace_id", "id"])
    op.create_table(
        "file_chunks",
        sa.Column("id", ID, primary_key=True),
        sa.Column("file_id", ID, sa.ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("location", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("search_vector", SEARCH_VECTOR, nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_file_chunks_file", "file_chunks", ["file_id", "ordinal"])
    op.create_index("ix_file_chunks_search", "file_chunks", ["search_vector"], postgresql_using="gin")
    op.create_table(
        "agent_files",
        sa.Column("agent_id", ID, sa.ForeignKey("agents.id"), primary_key=True),
        sa.Column("file_id", ID, sa.ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_agent_files_file", "agent_files", ["file_id"])
    op.create_table(
        "file_uploads",
        sa.Column("id", ID, primary_key=True),
        sa.Column("workspace_id", ID, sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("object_path", sa.String(300), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_file_uploads_expires_at", "file_uploads", ["expires_at"])
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS file_chunks_fts_delete")
        op.execute("DROP TRIGGER IF EXISTS file_chunks_fts_insert")
        op.execute("DROP TABLE IF EXISTS file_chunks_fts_vocab")
        op.execute("DROP TABLE IF EXISTS file_chunks_fts")
    op.drop_index("ix_file_uploads_expires_at", table_name="file_uploads")
    op.drop_table("file_uploads")
    op.drop_index("ix_agent_files_file", table_name="agent_files")
    op.drop_table("agent_files")
    op.drop_index("ix_file_chunks_search", table_name="file_chunks")
    op.drop_index("ix_file_chunks_file", table_name="file_chunks")
    op.drop_table("file_chunks")
    op.drop_index("ix_files_workspace_id", table_name="files")
    op.drop_table("files")
