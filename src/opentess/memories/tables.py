"""The memories capability's tables (imported by opentess.db.models, so that migrations see them).

Memories belong to a user, not to a workspace: the same person sees the same memories whichever
workspace they call from (Tess's model). Every user has one default collection ("My Memories"),
made the first time it is needed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from opentess.db.models import Base, IdType


class MemoryCollection(Base):
    __tablename__ = "memory_collections"
    __table_args__ = (
        # one default collection per user (made lazily, possibly by two requests at once)
        Index(
            "uq_memory_collections_default",
            "user_id",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
        Index("uq_memory_collections_user_name", "user_id", "name", unique=True),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Memory(Base):
    __tablename__ = "memories"
    __table_args__ = (
        Index("ix_memories_user_id", "user_id", "id"),
        Index("ix_memories_collection_id", "collection_id", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id"))
    collection_id: Mapped[int] = mapped_column(IdType, ForeignKey("memory_collections.id"))
    memory: Mapped[str] = mapped_column(Text)
    credits: Mapped[float] = mapped_column(Float, default=0.0)  # Tess prices memories; opentess does not
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
