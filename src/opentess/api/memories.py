"""Memories and memory collections (contract §9): the caller's own, whatever the workspace.

Tess's envelopes, not Laravel's page: ``{"message", "memories" | "collections", "meta":
{current_page, last_page, total}}``; ``per_page`` 1–50 (default 10; more is clamped to 50, as the
agent listings clamp theirs). A memory or collection of another user is a 404, exactly as a
missing one; an unknown ``collection_id`` in a body is a field error (422)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from starlette.responses import Response

from opentess.api import memory_schemas as ms
from opentess.api import routing, schemas
from opentess.api.bodies import read_json_object
from opentess.api.deps import AppState, PrincipalDep, StateDep
from opentess.api.errors import json_response
from opentess.errors import InvalidInput
from opentess.ids import MAX_PAGE
from opentess.memories import wire
from opentess.memories.store import MemoryStore, collection_name, memory_text, optional_id

router = routing.router(tags=["Memories"])

DEFAULT_PER_PAGE = 10
MAX_PER_PAGE = 50


def _store(state: AppState) -> MemoryStore:
    store = state.capabilities["memories"].extras["store"]
    assert isinstance(store, MemoryStore)
    return store


def _number(request: Request, name: str, default: int, errors: dict[str, list[str]]) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not 1 <= int(text) <= MAX_PAGE:
        errors[name] = [f"The {name} field must be a positive integer."]
        return default
    return int(text)


def _paging(request: Request, errors: dict[str, list[str]]) -> tuple[int, int]:
    """(page, per_page), or InvalidInput naming every bad parameter (with ``errors`` found before)."""
    page = _number(request, "page", 1, errors)
    per_page = min(_number(request, "per_page", DEFAULT_PER_PAGE, errors), MAX_PER_PAGE)
    if errors:
        raise InvalidInput(errors)
    return page, per_page


def _collection_filter(request: Request, errors: dict[str, list[str]]) -> int | None:
    raw = request.query_params.get("collection_id")
    return optional_id(raw, "collection_id", errors) if raw is not None else None


# memories -------------------------------------------------------------------------------------------


@router.get("/memories", response_model=ms.MemoryList, responses=schemas.native_errors(404))
async def list_memories(
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    collection_id: Annotated[str | None, Query(description="Only this collection's memories")] = None,
    page: ms.PageQuery = None,
    per_page: ms.PerPageQuery = None,
) -> Response:
    """The caller's memories, newest first; a collection that is not theirs is a 404."""
    errors: dict[str, list[str]] = {}
    collection = _collection_filter(request, errors)
    number, size = _paging(request, errors)
    records, total = await _store(state).memories(
        principal.user_id, collection_id=collection, offset=(number - 1) * size, limit=size
    )
    return json_response(
        200,
        {
            "message": "Memories fetched successfully!",
            "memories": [wire.memory(r) for r in records],
            "meta": wire.meta(number, size, total),
        },
    )


@router.post(
    "/memories",
    status_code=201,
    response_model=ms.MemoryCreated,
    responses=schemas.native_errors(400),
    openapi_extra=schemas.documented_body(ms.MemoryCreate),
)
async def create_memory(request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Remember something: in ``collection_id``, or the caller's default collection."""
    body = await read_json_object(request)
    errors: dict[str, list[str]] = {}
    text = memory_text(body.get("memory"), errors)
    collection = optional_id(body.get("collection_id"), "collection_id", errors)
    if errors:
        raise InvalidInput(errors)
    record = await _store(state).add(principal.user_id, text, collection)
    return json_response(201, {"memory": wire.memory(record)})


@router.get("/memories/{memory_id:id}", response_model=ms.MemoryFound, responses=schemas.native_errors(404))
async def get_memory(memory_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """One memory with its collection (beyond Tess)."""
    store = _store(state)
    record = await store.memory(principal.user_id, memory_id)
    collection = await store.collection(principal.user_id, record.collection_id)
    return json_response(200, {"memory": wire.memory_with_collection(record, collection)})


@router.patch(
    "/memories/{memory_id:id}",
    response_model=ms.MemoryUpdated,
    responses=schemas.native_errors(400, 404),
    openapi_extra=schemas.documented_body(ms.MemoryUpdate),
)
async def update_memory(memory_id: int, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Change a memory's text (required), and its collection when ``collection_id`` is given."""
    store = _store(state)
    await store.memory(principal.user_id, memory_id)  # a missing memory is a 404 before any field error
    body = await read_json_object(request)
    errors: dict[str, list[str]] = {}
    text = memory_text(body.get("memory"), errors)
    collection_id = optional_id(body.get("collection_id"), "collection_id", errors)
    if errors:
        raise InvalidInput(errors)
    record = await store.update(principal.user_id, memory_id, text, collection_id)
    collection = await store.collection(principal.user_id, record.collection_id)
    return json_response(
        200, {"message": "Memory updated successfully!", "memory": wire.memory_with_collection(record, collection)}
    )


@router.delete("/memories/{memory_id:id}", response_model=ms.Message, responses=schemas.native_errors(404))
async def delete_memory(memory_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    await _store(state).delete(principal.user_id, memory_id)
    return json_response(200, {"message": "Memory deleted successfully!"})


# collections ----------------------------------------------------------------------------------------


@router.get("/memory-collections", response_model=ms.CollectionList, responses=schemas.native_errors())
async def list_collections(
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    search: Annotated[str | None, Query(description="Search the names")] = None,
    page: ms.PageQuery = None,
    per_page: ms.PerPageQuery = None,
) -> Response:
    """The caller's collections, their default one ("My Memories") first."""
    number, size = _paging(request, {})
    records, total = await _store(state).collections(
        principal.user_id, search=search or None, offset=(number - 1) * size, limit=size
    )
    return json_response(
        200,
        {
            "message": "success",
            "collections": [wire.collection(r) for r in records],
            "meta": wire.meta(number, size, total),
        },
    )


@router.post(
    "/memory-collections",
    status_code=201,
    response_model=ms.CollectionCreated,
    responses=schemas.native_errors(400),
    openapi_extra=schemas.documented_body(ms.CollectionCreate),
)
async def create_collection(request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    errors: dict[str, list[str]] = {}
    name = collection_name((await read_json_object(request)).get("name"), errors)
    if errors:
        raise InvalidInput(errors)
    record = await _store(state).create_collection(principal.user_id, name)
    return json_response(201, {"collection": wire.collection(record)})


@router.get(
    "/memory-collections/{collection_id:id}",
    response_model=ms.CollectionCreated,
    responses=schemas.native_errors(404),
)
async def get_collection(collection_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """One collection (beyond Tess)."""
    return json_response(
        200, {"collection": wire.collection(await _store(state).collection(principal.user_id, collection_id))}
    )


@router.put(
    "/memory-collections/{collection_id:id}",
    response_model=ms.CollectionUpdated,
    responses=schemas.native_errors(400, 404),
    openapi_extra=schemas.documented_body(ms.CollectionUpdate),
)
async def rename_collection(collection_id: int, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    store = _store(state)
    await store.collection(principal.user_id, collection_id)
    errors: dict[str, list[str]] = {}
    name = collection_name((await read_json_object(request)).get("name"), errors)
    if errors:
        raise InvalidInput(errors)
    record = await store.rename_collection(principal.user_id, collection_id, name)
    return json_response(200, {"message": "Collection updated successfully", "collection": wire.collection(record)})


@router.delete(
    "/memory-collections/{collection_id:id}", response_model=ms.Message, responses=schemas.native_errors(403, 404)
)
async def delete_collection(collection_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Delete a collection and its memories; the default collection cannot be (403)."""
    await _store(state).delete_collection(principal.user_id, collection_id)
    return json_response(200, {"message": "Collection deleted successfully"})
