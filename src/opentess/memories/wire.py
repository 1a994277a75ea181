"""The memories capability's wire objects (Tess's shapes, contract §9), for the API and the CLI."""

from __future__ import annotations

from typing import Any

from opentess.clock import laravel
from opentess.memories.store import CollectionRecord, MemoryRecord


def memory(record: MemoryRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "user_id": record.user_id,
        "memory": record.memory,
        "credits": record.credits,
        "collection_id": record.collection_id,
        "created_at": laravel(record.created_at),
        "updated_at": laravel(record.updated_at),
    }


def memory_with_collection(record: MemoryRecord, collection: CollectionRecord) -> dict[str, Any]:
    """The memory as ``PATCH /memories/{id}`` answers it: with its collection."""
    return {
        **memory(record),
        "collection": {"id": collection.id, "user_id": collection.user_id, "name": collection.name},
    }


def collection(record: CollectionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "user_id": record.user_id,
        "name": record.name,
        "display_name": record.display_name,
        "is_default": record.is_default,
        "created_at": laravel(record.created_at),
        "updated_at": laravel(record.updated_at),
    }


def meta(page: int, per_page: int, total: int) -> dict[str, int]:
    """Tess's ``meta`` of the memory listings."""
    return {"current_page": page, "last_page": max(1, -(-total // per_page)), "total": total}


def used(context: dict[str, Any] | None) -> dict[str, Any] | None:
    """What an execution's context took from memories (its ``memories`` field), or None when
    the call named no collection."""
    recorded = (context or {}).get("memories")
    if not isinstance(recorded, dict):
        return None
    return {
        "collections": recorded.get("collections", []),
        "used": recorded.get("used", []),
        "available": recorded.get("available", 0),
        "selection": recorded.get("selection", "all"),
    }
