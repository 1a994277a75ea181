"""The console's tables (imported by opentess.db.models, so that migrations see them); the
password itself is a column of ``users`` (``User.password_hash``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from opentess.db.models import Base, IdType


class ConsoleSession(Base):
    """A signed-in browser. The cookie carries a random secret (signed); only its SHA-256 is
    stored, so that a copy of the database opens no session. Signing out deletes the row."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # the workspace the console shows; checked against the user's memberships on every request
    workspace_id: Mapped[int | None] = mapped_column(IdType)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class ConsoleKey(Base):
    """The key that signs session cookies, CSRF tokens and setup links: made once by the first
    process that needs it and shared by every process through the database (deleting it signs
    everybody out and voids every setup link)."""

    __tablename__ = "console_keys"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime)
