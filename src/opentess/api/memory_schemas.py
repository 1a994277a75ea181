"""What the memories routes take and answer (contract §9), for the OpenAPI document; the
answers are built by opentess.memories.wire."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, Field

from opentess.memories.store import MAX_MEMORY_CHARS, MAX_NAME_CHARS

Timestamp = str  # Laravel form (opentess.api.schemas imports this module: no import back)
PageQuery = Annotated[str | None, Query(description="Page number, from 1")]
PerPageQuery = Annotated[str | None, Query(description="Items per page, 1-50 (default 10; more is clamped to 50)")]


class MemoryOut(BaseModel):
    id: int
    user_id: int
    memory: str
    credits: float = Field(description="Always 0: opentess does not price memories")
    collection_id: int
    created_at: Timestamp
    updated_at: Timestamp


class CollectionRef(BaseModel):
    id: int
    user_id: int
    name: str


class MemoryWithCollection(MemoryOut):
    collection: CollectionRef


class Meta(BaseModel):
    current_page: int
    last_page: int
    total: int


class MemoryList(BaseModel):
    message: str = Field(description='"Memories fetched successfully!"')
    memories: list[MemoryOut]
    meta: Meta


class MemoryCreated(BaseModel):
    memory: MemoryOut


class MemoryUpdated(BaseModel):
    message: str = Field(description='"Memory updated successfully!"')
    memory: MemoryWithCollection


class MemoryFound(BaseModel):
    memory: MemoryWithCollection


class Message(BaseModel):
    message: str


class CollectionOut(BaseModel):
    id: int
    user_id: int
    name: str
    display_name: str
    is_default: bool = Field(description='The user\'s default collection ("My Memories"): it cannot be deleted')
    created_at: Timestamp
    updated_at: Timestamp


class CollectionList(BaseModel):
    message: str = Field(description='"success"')
    collections: list[CollectionOut]
    meta: Meta


class CollectionCreated(BaseModel):
    collection: CollectionOut


class CollectionUpdated(BaseModel):
    message: str = Field(description='"Collection updated successfully"')
    collection: CollectionOut


class MemoryCreate(BaseModel):
    """A new memory; without `collection_id` it goes to the default collection."""

    memory: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS)
    collection_id: int | None = Field(default=None, description="One of the caller's collections")


class MemoryUpdate(BaseModel):
    """The memory's new text, and optionally its new collection."""

    memory: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS)
    collection_id: int | None = Field(default=None, description="One of the caller's collections")


class CollectionCreate(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="Unique among the caller's collections")


class CollectionUpdate(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)


class MemoriesUsed(BaseModel):
    """What an execution's context took from memories (null: the call named no collection)."""

    collections: list[int] = Field(description="The collections the call named (memory_collections)")
    used: list[int] = Field(description="The memories put into the context, in the order the model saw them")
    available: int = Field(description="How many memories those collections held")
    selection: str = Field(description='"all" (they all fit), or "relevance" (the most relevant that fit)')
