"""Memories and their collections: one user's, always (every query is scoped by ``user_id``, so
another user's memory or collection is exactly a missing one)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.clock import utcnow
from opentess.db.locking import is_foreign_key_error
from opentess.errors import CollectionNotFound, Forbidden, InvalidInput, MemoryNotFound
from opentess.ids import parse_id
from opentess.memories.tables import Memory, MemoryCollection

MAX_MEMORY_CHARS = 32_000  # Tess's limit
MAX_NAME_CHARS = 100
DEFAULT_NAME = "default"
DEFAULT_DISPLAY_NAME = "My Memories"
_KNOWN_DEFAULTS_MAX = 100_000  # users whose default collection this process has seen (it is never deleted)


@dataclass(frozen=True, slots=True)
class CollectionRecord:
    id: int
    user_id: int
    name: str
    display_name: str
    is_default: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    id: int
    user_id: int
    collection_id: int
    memory: str
    credits: float
    created_at: datetime
    updated_at: datetime


def _collection(row: Any) -> CollectionRecord:
    r = row._mapping
    return CollectionRecord(
        r["id"], r["user_id"], r["name"], r["display_name"], bool(r["is_default"]), r["created_at"], r["updated_at"]
    )


def _memory(row: Any) -> MemoryRecord:
    r = row._mapping
    return MemoryRecord(
        r["id"], r["user_id"], r["collection_id"], r["memory"], float(r["credits"] or 0), r["created_at"],
        r["updated_at"],
    )  # fmt: skip


# the rules of the fields, shared by the API and the CLI ----------------------------------------------


def memory_text(value: Any, errors: dict[str, list[str]], field: str = "memory") -> str:
    """A memory's text: a non-blank string of at most 32,000 characters."""
    if value is None or (isinstance(value, str) and not value.strip()):
        errors[field] = [f"The {field} field is required."]
        return ""
    if not isinstance(value, str):
        errors[field] = [f"The {field} field must be a string."]
        return ""
    if len(value) > MAX_MEMORY_CHARS:
        errors[field] = [f"The {field} field must not be greater than {MAX_MEMORY_CHARS} characters."]
        return ""
    return value


def collection_name(value: Any, errors: dict[str, list[str]]) -> str:
    """A collection's name: a non-blank string of at most 100 characters, trimmed."""
    if value is None or (isinstance(value, str) and not value.strip()):
        errors["name"] = ["The name field is required."]
        return ""
    if not isinstance(value, str):
        errors["name"] = ["The name field must be a string."]
        return ""
    name = value.strip()
    if len(name) > MAX_NAME_CHARS:
        errors["name"] = [f"The name field must not be greater than {MAX_NAME_CHARS} characters."]
        return ""
    return name


def optional_id(value: Any, field: str, errors: dict[str, list[str]]) -> int | None:
    """An optional id (a JSON number or digit string); ``null``, ``""`` and ``0`` are none."""
    if value is None or value == "" or value == 0 or value == "0":
        return None
    found = parse_id(value)
    if found is None:
        errors[field] = [f"The {field} field must be an id (a positive integer)."]
    return found


def _name_taken() -> InvalidInput:
    return InvalidInput({"name": ["The name has already been taken."]})


def _unknown_collection() -> InvalidInput:
    return InvalidInput({"collection_id": ["The selected collection_id is invalid."]})


class MemoryStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._defaults: dict[int, int] = {}  # user id → their default collection's id

    # collections ---------------------------------------------------------------------------------

    async def default_collection(self, user_id: int) -> int:
        """The id of the user's default collection, made the first time it is needed (two
        requests at once make one: the unique index lets one insert win)."""
        known = self._defaults.get(user_id)
        if known is not None:
            return known
        stmt = select(MemoryCollection.id).where(MemoryCollection.user_id == user_id, MemoryCollection.is_default)
        async with self._engine.connect() as conn:
            found = (await conn.execute(stmt)).scalar_one_or_none()
        if found is None:
            now = utcnow()
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        insert(MemoryCollection).values(
                            user_id=user_id, name=DEFAULT_NAME, display_name=DEFAULT_DISPLAY_NAME, is_default=True,
                            created_at=now, updated_at=now,
                        )
                    )  # fmt: skip
            except IntegrityError:
                pass  # made by a concurrent request
            async with self._engine.connect() as conn:
                found = (await conn.execute(stmt)).scalar_one()
        if len(self._defaults) >= _KNOWN_DEFAULTS_MAX:
            self._defaults.clear()
        self._defaults[user_id] = int(found)
        return int(found)

    async def collections(
        self, user_id: int, *, search: str | None, offset: int, limit: int
    ) -> tuple[list[CollectionRecord], int]:
        """A page of the user's collections, the default one first; ``search`` matches names."""
        await self.default_collection(user_id)
        conditions: list[Any] = [MemoryCollection.user_id == user_id]
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conditions.append(
                or_(
                    MemoryCollection.name.ilike(pattern, escape="\\"),
                    MemoryCollection.display_name.ilike(pattern, escape="\\"),
                )
            )
        async with self._engine.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(MemoryCollection).where(*conditions))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(*MemoryCollection.__table__.c)
                    .where(*conditions)
                    .order_by(MemoryCollection.is_default.desc(), MemoryCollection.id)
                    .offset(offset)
                    .limit(limit)
                )
            ).all()
        return [_collection(r) for r in rows], int(total)

    async def collection(self, user_id: int, collection_id: int) -> CollectionRecord:
        stmt = select(*MemoryCollection.__table__.c).where(
            MemoryCollection.id == collection_id, MemoryCollection.user_id == user_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise CollectionNotFound()
        return _collection(row)

    async def owned(self, user_id: int, collection_ids: Sequence[int]) -> set[int]:
        """Which of these collections are the user's."""
        if not collection_ids:
            return set()
        stmt = select(MemoryCollection.id).where(
            MemoryCollection.user_id == user_id, MemoryCollection.id.in_(list(collection_ids))
        )
        async with self._engine.connect() as conn:
            return {int(i) for i in (await conn.execute(stmt)).scalars()}

    async def create_collection(self, user_id: int, name: str) -> CollectionRecord:
        await self.default_collection(user_id)  # first, so that no collection takes its name
        now = utcnow()
        try:
            async with self._engine.begin() as conn:
                new_id = (
                    await conn.execute(
                        insert(MemoryCollection)
                        .values(
                            user_id=user_id, name=name, display_name=name, is_default=False, created_at=now,
                            updated_at=now,
                        )
                        .returning(MemoryCollection.id)
                    )
                ).scalar_one()  # fmt: skip
        except IntegrityError as exc:
            raise _name_taken() from exc
        return await self.collection(user_id, int(new_id))

    async def rename_collection(self, user_id: int, collection_id: int, name: str) -> CollectionRecord:
        await self.collection(user_id, collection_id)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(MemoryCollection)
                    .where(MemoryCollection.id == collection_id, MemoryCollection.user_id == user_id)
                    .values(name=name, display_name=name, updated_at=utcnow())
                )
        except IntegrityError as exc:
            raise _name_taken() from exc
        return await self.collection(user_id, collection_id)

    async def delete_collection(self, user_id: int, collection_id: int) -> None:
        """Delete a collection and its memories; the default collection cannot be (403)."""
        found = await self.collection(user_id, collection_id)
        if found.is_default:
            raise Forbidden("Default collection cannot be deleted")
        async with self._engine.begin() as conn:
            # first the collection's row, with the lock a memory's insert (its foreign-key check)
            # waits for: a memory added meanwhile is deleted with the others, or refused after
            this = MemoryCollection.id == collection_id
            await conn.execute(select(MemoryCollection.id).where(this).with_for_update())
            await conn.execute(delete(Memory).where(Memory.collection_id == collection_id, Memory.user_id == user_id))
            await conn.execute(
                delete(MemoryCollection).where(
                    MemoryCollection.id == collection_id, MemoryCollection.user_id == user_id
                )
            )

    # memories --------------------------------------------------------------------------------------

    async def memories(
        self, user_id: int, *, collection_id: int | None, offset: int, limit: int
    ) -> tuple[list[MemoryRecord], int]:
        """A page of the user's memories, newest first; CollectionNotFound for a collection
        that is not theirs."""
        conditions: list[Any] = [Memory.user_id == user_id]
        if collection_id is not None:
            await self.collection(user_id, collection_id)
            conditions.append(Memory.collection_id == collection_id)
        async with self._engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(Memory).where(*conditions))).scalar_one()
            rows = (
                await conn.execute(
                    select(*Memory.__table__.c)
                    .where(*conditions)
                    .order_by(Memory.id.desc())
                    .offset(offset)
                    .limit(limit)
                )
            ).all()
        return [_memory(r) for r in rows], int(total)

    async def memory(self, user_id: int, memory_id: int) -> MemoryRecord:
        stmt = select(*Memory.__table__.c).where(Memory.id == memory_id, Memory.user_id == user_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise MemoryNotFound()
        return _memory(row)

    async def find(self, memory_id: int) -> MemoryRecord:
        """A memory, whoever's it is (the operator's CLI)."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*Memory.__table__.c).where(Memory.id == memory_id))).first()
        if row is None:
            raise MemoryNotFound()
        return _memory(row)

    async def _target(self, user_id: int, collection_id: int | None) -> int:
        if collection_id is None:
            return await self.default_collection(user_id)
        if not await self.owned(user_id, [collection_id]):
            raise _unknown_collection()
        return collection_id

    async def add(self, user_id: int, text: str, collection_id: int | None = None) -> MemoryRecord:
        """A new memory, in ``collection_id`` (one of the user's, else a field error) or the
        user's default collection."""
        target = await self._target(user_id, collection_id)
        now = utcnow()
        # the row as the insert returns it: read again, it could be gone already, with a
        # collection deleted meanwhile
        async with _collection_may_go(), self._engine.begin() as conn:
            row = (
                await conn.execute(
                    insert(Memory)
                    .values(
                        user_id=user_id, collection_id=target, memory=text, credits=0.0, created_at=now,
                        updated_at=now,
                    )
                    .returning(*Memory.__table__.c)
                )
            ).one()  # fmt: skip
        return _memory(row)

    async def update(self, user_id: int, memory_id: int, text: str, collection_id: int | None) -> MemoryRecord:
        """Change a memory's text, and its collection when one is given."""
        await self.memory(user_id, memory_id)
        values: dict[str, Any] = {"memory": text, "updated_at": utcnow()}
        if collection_id is not None:
            values["collection_id"] = await self._target(user_id, collection_id)
        async with _collection_may_go(), self._engine.begin() as conn:
            await conn.execute(update(Memory).where(Memory.id == memory_id, Memory.user_id == user_id).values(**values))
        return await self.memory(user_id, memory_id)

    async def delete(self, user_id: int, memory_id: int) -> MemoryRecord:
        found = await self.memory(user_id, memory_id)
        async with self._engine.begin() as conn:
            await conn.execute(delete(Memory).where(Memory.id == memory_id, Memory.user_id == user_id))
        return found


@asynccontextmanager
async def _collection_may_go() -> AsyncIterator[None]:
    """A memory written into a collection that a concurrent request deleted after it was
    checked: the same field error as a collection that never was."""
    try:
        yield
    except IntegrityError as exc:
        if is_foreign_key_error(exc):
            raise _unknown_collection() from None
        raise
