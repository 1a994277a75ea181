"""Executions: the list with filters (agent, status, dates) and live status, the detail (what
the model was sent, the conversation before it, output, usage, credits, error, and what each
context source added), and cancel — through the store's search and the execution service, in
the visitor's workspace only."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from opentess.api import wire
from opentess.api.deps import AppState
from opentess.db.models import Agent
from opentess.errors import AgentNotFound, ExecutionNotFound
from opentess.executions.context import SECTION_BREAK
from opentess.ids import parse_id
from opentess.memories.context import HEADER as MEMORIES_HEADER
from opentess.store import ExecutionRecord
from opentess.store.executions import ACTIVE, TERMINAL
from opentess.web import memories as web_memories
from opentess.web.console import Visitor, console_of, endpoint, page, ui_url
from opentess.web.render import fetch_page, page_number, paging, render

PER_PAGE = 25
STATUSES = (*ACTIVE, *TERMINAL)


@dataclass(frozen=True, slots=True)
class Filters:
    agent_id: int | None
    root_id: int | None
    status: str | None
    since: date | None
    until: date | None
    page: int

    @classmethod
    def of(cls, request: Request) -> Filters:
        params = request.query_params
        status = params.get("status") or None
        return cls(
            parse_id(params.get("agent_id")),
            parse_id(params.get("root_id")),
            status if status in STATUSES else None,
            _day(params.get("since")),
            _day(params.get("until")),
            page_number(params.get("page")),
        )

    def query(self, **changes: Any) -> str:
        values = {
            "agent_id": self.agent_id,
            "root_id": self.root_id,
            "status": self.status,
            "since": self.since,
            "until": self.until,
            "page": self.page,
            **changes,
        }
        return urlencode({k: str(v) for k, v in values.items() if v not in (None, "") and (k != "page" or v != 1)})


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


async def _search(
    state: AppState, visitor: Visitor, filters: Filters, offset: int, limit: int = PER_PAGE
) -> tuple[list[ExecutionRecord], int]:
    return await state.store.executions.search(
        visitor.workspace.id,
        agent_id=filters.agent_id,
        root_id=filters.root_id,
        status=filters.status,
        descending=True,
        offset=offset,
        limit=limit,
        # whole UTC days: from the start of ``since`` to the end of ``until``
        since=datetime.combine(filters.since, time()) if filters.since else None,
        before=datetime.combine(filters.until + timedelta(days=1), time()) if filters.until else None,
    )


async def agent_titles(state: AppState, ids: set[int]) -> dict[int, str]:
    """Titles of the agents of some executions, deleted ones included (their runs stay)."""
    if not ids:
        return {}
    async with state.engine.connect() as conn:
        rows = (await conn.execute(select(Agent.id, Agent.title, Agent.deleted_at).where(Agent.id.in_(ids)))).all()
    return {r.id: r.title + (" (deleted)" if r.deleted_at is not None else "") for r in rows}


def _row(record: ExecutionRecord) -> dict[str, Any]:
    """What the list's script refreshes for a row."""
    return {
        "id": record.id,
        "status": record.status,
        "credits": record.credits,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "model": record.model,
    }


@page
async def executions_list(request: Request, visitor: Visitor) -> Response:
    state = console_of(request).state
    filters = Filters.of(request)
    records, total, page_no = await fetch_page(
        filters.page, PER_PAGE, lambda offset, limit: _search(state, visitor, filters, offset, limit)
    )
    filters = replace(filters, page=page_no)
    titles = await agent_titles(state, {r.agent_id for r in records})
    agents = await state.store.agents.list_all(visitor.workspace.id)
    return render(
        request,
        "executions.html",
        visitor,
        section="executions",
        records=records,
        titles=titles,
        agents=agents,
        filters=filters,
        statuses=STATUSES,
        active=ACTIVE,
        total=total,
        **paging(filters.page, total, PER_PAGE, lambda n: "?" + filters.query(page=n)),
        live_url=ui_url(request, "/api/executions") + "?" + filters.query(),
    )


@endpoint
async def executions_live(request: Request, visitor: Visitor) -> Response:
    """The list's rows as they are now (its script polls while some are running)."""
    filters = Filters.of(request)
    records, _ = await _search(console_of(request).state, visitor, filters, (filters.page - 1) * PER_PAGE)
    return JSONResponse({"data": [_row(r) for r in records]})


@page
async def execution_detail(request: Request, visitor: Visitor) -> Response:
    state = console_of(request).state
    record = await state.store.executions.get(request.path_params["execution_id"], visitor.workspace.id)
    full = await state.store.executions.get_full(record.id)
    context: dict[str, Any] = full.get("context") or {}
    earlier = await _earlier_turns(state, context)
    titles = await agent_titles(state, {record.agent_id})
    shown = wire.execution(record)
    memories = shown["memories"]
    texts: dict[int, str] = {}
    names: dict[int, str] = {}
    if memories:  # the viewer's own memories only: another user's stay theirs (ids alone)
        texts = await web_memories.memory_texts(state, visitor.user.id, memories["used"])
        names = await web_memories.collection_names(state, visitor.user.id, memories["collections"])
    try:  # a deleted agent's runs stay readable, but its conversations cannot go on
        await state.store.agents.visible(record.agent_id, visitor.workspace.id)
        agent_live = True
    except AgentNotFound:
        agent_live = False
    return render(
        request,
        "execution.html",
        visitor,
        section="executions",
        record=record,
        full=full,
        context=context,
        earlier=earlier,
        title=titles.get(record.agent_id, f"agent {record.agent_id}"),
        agent_live=agent_live,
        active=ACTIVE,
        notice=request.query_params.get("notice", ""),
        messages=_without_others_memories(full.get("messages") or [], full.get("user_id"), visitor.user.id),
        knowledge=shown["knowledge"],
        memories=memories,
        memory_texts=texts,
        collection_names=names,
        sources=[s for s in shown["sources"] if isinstance(s, dict)],
        steps=[s for s in shown["steps"] if isinstance(s, dict)],
        link_of=_link,
    )


HIDDEN_MEMORIES = (
    MEMORIES_HEADER.split("\n", 1)[0] + "\n(the memories of the user who ran this execution: theirs only, not shown)"
)


def _without_others_memories(messages: list[dict[str, Any]], runner: object, viewer: int) -> list[dict[str, Any]]:
    """The messages the model was sent, as the viewer may read them: memories belong to the user
    who ran the execution, so another member of the workspace sees their section's place only
    (the memories source writes it as one section of the system message, with no blank line
    inside: every line break of a memory is indented)."""
    if runner == viewer:
        return messages
    shown = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "system" and isinstance(content, str) and MEMORIES_HEADER in content:
            sections = content.split(SECTION_BREAK)
            content = SECTION_BREAK.join(HIDDEN_MEMORIES if s.startswith(MEMORIES_HEADER) else s for s in sections)
            message = {**message, "content": content}
        shown.append(message)
    return shown


def _link(url: object) -> str | None:
    """A source's URL when it may be a link (http or https only: never ``javascript:``)."""
    if not isinstance(url, str):
        return None
    try:  # a search result's URL is whatever the backend sent: `http://[x/` does not even split
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return url.strip() if scheme in ("http", "https") else None


async def _earlier_turns(state: AppState, context: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation the model was sent before this execution's own messages: the turns of
    the executions the conversation source recorded (history is not copied into each one)."""
    conversation = context.get("conversation")
    ids = conversation.get("executions", []) if isinstance(conversation, dict) else []
    turns: list[dict[str, Any]] = []
    for execution_id in ids if isinstance(ids, list) else []:
        try:
            earlier = await state.store.executions.get_full(int(execution_id))
        except (ExecutionNotFound, TypeError, ValueError):
            continue
        for message in earlier.get("turns") or []:
            turns.append({**message, "execution_id": earlier["id"]})
        turns.append({"role": "assistant", "content": earlier.get("output") or "", "execution_id": earlier["id"]})
    return turns


@page
async def execution_cancel(request: Request, visitor: Visitor) -> Response:
    """Stop a running execution (the service waits until its end is stored)."""
    state = console_of(request).state
    record = await state.service.cancel(visitor.principal, request.path_params["execution_id"])
    return RedirectResponse(ui_url(request, f"/executions/{record.id}?notice=cancelled"), status_code=303)


@endpoint
async def execution_json(request: Request, visitor: Visitor) -> Response:
    """One execution with its model and usage (the playground shows them under each answer)."""
    state = console_of(request).state
    record = await state.store.executions.get(request.path_params["execution_id"], visitor.workspace.id)
    return JSONResponse({**wire.execution(record), **_row(record), "error": record.error})


@endpoint
async def execution_cancel_json(request: Request, visitor: Visitor) -> Response:
    """``POST /agent-responses/{id}/cancel`` for the session's principal (the playground's Stop)."""
    state = console_of(request).state
    record = await state.service.cancel(visitor.principal, request.path_params["execution_id"])
    return JSONResponse(wire.execution(record))
