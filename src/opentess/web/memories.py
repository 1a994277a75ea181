"""Memories: the signed-in user's own collections (the default "My Memories" first; create,
rename, delete — never the default) and their memories (add, edit, move, delete, a page at a
time). Memories belong to the user, not to the workspace: the console shows the same ones in
every workspace, and another user's memory or collection is a 404, exactly as on the API.

The rules are the API's: the fields are checked by opentess.memories.store's ``memory_text``,
``collection_name`` and ``optional_id`` (the functions behind ``/memories`` and
``/memory-collections``), and every change goes through its MemoryStore, scoped to the user."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opentess.api.deps import AppState
from opentess.errors import InvalidInput, OpentessError
from opentess.ids import parse_id
from opentess.memories.store import (
    MAX_MEMORY_CHARS,
    MAX_NAME_CHARS,
    CollectionRecord,
    MemoryRecord,
    MemoryStore,
    collection_name,
    memory_text,
    optional_id,
)
from opentess.memories.tables import Memory, MemoryCollection
from opentess.web.console import Visitor, console_of, form_of, page, ui_url
from opentess.web.render import fetch_page, page_number, paging, problems, render

PER_PAGE = 20
COLLECTIONS = 100  # the collections listed (the default first)


def store_of(state: AppState) -> MemoryStore:
    store = state.capabilities["memories"].extras["store"]
    assert isinstance(store, MemoryStore)
    return store


async def collections(state: AppState, user_id: int) -> tuple[list[CollectionRecord], int]:
    """The user's collections, the default one first (made when missing), and how many."""
    return await store_of(state).collections(user_id, search=None, offset=0, limit=COLLECTIONS)


async def _counts(state: AppState, user_id: int) -> dict[int, int]:
    """How many memories each of the user's collections holds (read-only)."""
    stmt = select(Memory.collection_id, func.count()).where(Memory.user_id == user_id).group_by(Memory.collection_id)
    async with state.engine.connect() as conn:
        return {int(c): int(n) for c, n in (await conn.execute(stmt)).all()}


async def memory_texts(state: AppState, user_id: int, ids: Sequence[int]) -> dict[int, str]:
    """The texts of these memories that are the user's (an execution's page shows only its
    viewer's own memories: those of the user who ran it stay theirs)."""
    if not ids:
        return {}
    stmt = select(Memory.id, Memory.memory).where(Memory.user_id == user_id, Memory.id.in_(list(ids)))
    async with state.engine.connect() as conn:
        return {int(i): str(m) for i, m in (await conn.execute(stmt)).all()}


async def collection_names(state: AppState, user_id: int, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    stmt = select(MemoryCollection.id, MemoryCollection.display_name).where(
        MemoryCollection.user_id == user_id, MemoryCollection.id.in_(list(ids))
    )
    async with state.engine.connect() as conn:
        return {int(i): str(n) for i, n in (await conn.execute(stmt)).all()}


@dataclass
class Problems:
    """What a form was sent back with: its problems by form and field, and what was typed."""

    form: str = ""  # "new-collection", "rename", "new-memory", "memory-ID", "delete"
    errors: dict[str, list[str]] = field(default_factory=dict)
    typed: dict[str, str] = field(default_factory=dict)

    def of(self, form: str, name: str) -> list[str]:
        return self.errors.get(name, []) if self.form == form else []

    def value(self, form: str, name: str, default: str = "") -> str:
        return self.typed.get(name, default) if self.form == form else default

    @property
    def general(self) -> list[str]:
        """Problems not about a field of the form (shown at the top)."""
        known = {"memory", "name", "collection_id"}
        return [f"{k}: {m}" if k else m for k, ms in self.errors.items() if k not in known for m in ms]


async def _page(
    request: Request,
    visitor: Visitor,
    *,
    collection_id: int | None = None,
    page_no: int | None = None,
    status: int = 200,
    sent: Problems | None = None,
) -> Response:
    state = console_of(request).state
    store = store_of(state)
    user_id = visitor.user.id
    listed, total_collections = await collections(state, user_id)
    wanted = collection_id if collection_id is not None else parse_id(request.query_params.get("collection"))
    current = await store.collection(user_id, wanted) if wanted else listed[0]  # not theirs: a 404

    async def fetch(offset: int, limit: int) -> tuple[list[MemoryRecord], int]:
        return await store.memories(user_id, collection_id=current.id, offset=offset, limit=limit)

    number = page_no or page_number(request.query_params.get("page"))
    records, total, number = await fetch_page(number, PER_PAGE, fetch)

    def page_url(n: int) -> str:
        return "?" + urlencode({"collection": current.id, **({"page": n} if n > 1 else {})})

    return render(
        request,
        "memories.html",
        visitor,
        status=status,
        section="memories",
        collections=listed,
        total_collections=total_collections,
        counts=await _counts(state, user_id),
        current=current,
        memories=records,
        total=total,
        **paging(number, total, PER_PAGE, page_url),
        sent=sent or Problems(),
        max_chars=MAX_MEMORY_CHARS,
        max_name=MAX_NAME_CHARS,
        notice=request.query_params.get("notice", ""),
    )


@page
async def memories_page(request: Request, visitor: Visitor) -> Response:
    """``?collection=ID`` (default: the default collection), ``?page=N``."""
    return await _page(request, visitor)


def _to(request: Request, collection_id: int | None, notice: str, page_no: int | None = None) -> Response:
    query: dict[str, Any] = {}
    if collection_id is not None:
        query["collection"] = collection_id
    if page_no and page_no > 1:
        query["page"] = page_no
    query["notice"] = notice
    return RedirectResponse(ui_url(request, "/memories?" + urlencode(query)), status_code=303)


def _text(value: Any) -> Any:
    """A textarea's text as a JSON client would send it: browsers submit CRLF line breaks."""
    return value.replace("\r\n", "\n") if isinstance(value, str) else value


# collections ----------------------------------------------------------------------------------------


@page
async def collection_create(request: Request, visitor: Visitor) -> Response:
    """``POST /memory-collections``."""
    form = await form_of(request)
    errors: dict[str, list[str]] = {}
    name = collection_name(form.get("name"), errors)
    try:
        if errors:
            raise InvalidInput(errors)
        record = await store_of(console_of(request).state).create_collection(visitor.user.id, name)
    except InvalidInput as exc:
        sent = Problems("new-collection", exc.errors, {"name": str(form.get("name") or "")})
        return await _page(request, visitor, status=exc.status, sent=sent)
    return _to(request, record.id, "collection-created")


async def _own_collection(request: Request, visitor: Visitor) -> tuple[MemoryStore, CollectionRecord]:
    """The memory store and the collection of the path, the visitor's own (another user's is a
    404, as on the API)."""
    store = store_of(console_of(request).state)
    return store, await store.collection(visitor.user.id, request.path_params["collection_id"])


@page
async def collection_rename(request: Request, visitor: Visitor) -> Response:
    """``PUT /memory-collections/{id}`` (the default collection may be renamed too)."""
    store, found = await _own_collection(request, visitor)
    collection_id = found.id
    form = await form_of(request)
    errors: dict[str, list[str]] = {}
    name = collection_name(form.get("name"), errors)
    try:
        if errors:
            raise InvalidInput(errors)
        await store.rename_collection(visitor.user.id, collection_id, name)
    except InvalidInput as exc:
        sent = Problems("rename", exc.errors, {"name": str(form.get("name") or "")})
        return await _page(request, visitor, collection_id=collection_id, status=exc.status, sent=sent)
    return _to(request, collection_id, "collection-renamed")


@page
async def collection_delete(request: Request, visitor: Visitor) -> Response:
    """``DELETE /memory-collections/{id}``: the collection and its memories; the default one
    cannot be deleted (the API's 403, in its words)."""
    store, found = await _own_collection(request, visitor)
    collection_id = found.id
    try:
        await store.delete_collection(visitor.user.id, collection_id)
    except OpentessError as exc:
        sent = Problems("delete", {"": problems(exc)})
        return await _page(request, visitor, collection_id=found.id, status=exc.status, sent=sent)
    return _to(request, None, "collection-deleted")


# memories -------------------------------------------------------------------------------------------


@page
async def memory_create(request: Request, visitor: Visitor) -> Response:
    """``POST /memories`` into this collection."""
    store, found = await _own_collection(request, visitor)
    collection_id = found.id
    form = await form_of(request)
    errors: dict[str, list[str]] = {}
    raw = _text(form.get("memory"))
    text = memory_text(raw, errors)
    try:
        if errors:
            raise InvalidInput(errors)
        await store.add(visitor.user.id, text, collection_id)
    except InvalidInput as exc:
        sent = Problems("new-memory", exc.errors, {"memory": raw if isinstance(raw, str) else ""})
        return await _page(request, visitor, collection_id=collection_id, status=exc.status, sent=sent)
    return _to(request, collection_id, "memory-added")


@page
async def memory_update(request: Request, visitor: Visitor) -> Response:
    """``PATCH /memories/{id}``: its text, and its collection when another is chosen."""
    store = store_of(console_of(request).state)
    memory_id = request.path_params["memory_id"]
    before = await store.memory(visitor.user.id, memory_id)  # another user's: a 404
    form = await form_of(request)
    errors: dict[str, list[str]] = {}
    raw = _text(form.get("memory"))
    text = memory_text(raw, errors)
    collection_id = optional_id(form.get("collection_id"), "collection_id", errors)
    page_no = page_number(form.get("page"))
    try:
        if errors:
            raise InvalidInput(errors)
        record = await store.update(visitor.user.id, memory_id, text, collection_id)
    except InvalidInput as exc:
        sent = Problems(f"memory-{memory_id}", exc.errors, {"memory": raw if isinstance(raw, str) else ""})
        return await _page(
            request, visitor, collection_id=before.collection_id, page_no=page_no, status=exc.status, sent=sent
        )
    moved = record.collection_id != before.collection_id
    return _to(request, record.collection_id, f"memory-{'moved' if moved else 'saved'}-{memory_id}",
               None if moved else page_no)  # fmt: skip


@page
async def memory_delete(request: Request, visitor: Visitor) -> Response:
    """``DELETE /memories/{id}``."""
    store = store_of(console_of(request).state)
    form = await form_of(request)
    record = await store.delete(visitor.user.id, request.path_params["memory_id"])  # another user's: a 404
    return _to(request, record.collection_id, f"memory-deleted-{record.id}", page_number(form.get("page")))
