"""Files: the workspace's files (status, size, pages and chunks, the agents they are linked to),
upload with a progress bar, process now, delete, and linking files to agents — from the files
page and from an agent's page.

Every operation is the API's: the upload endpoint is ``POST /files``'s own route function run
with the session's principal (the same streaming form parser, size limit and quotas), and the
forms call the files service exactly as ``/files/{id}/process``, ``DELETE /files/{id}`` and
``/agents/{id}/files`` do, in the visitor's workspace only: another workspace's file or agent
is a 404, as if it did not exist."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opentess.api import files as api_files
from opentess.api.deps import AppState
from opentess.db.models import Agent
from opentess.errors import InvalidInput, NotFound, OpentessError
from opentess.files.service import FilesService
from opentess.files.store import FileRecord
from opentess.files.tables import AgentFile
from opentess.ids import parse_id
from opentess.store import AgentRecord
from opentess.web.console import Visitor, console_of, endpoint, form_of, page, safe_next, ui_url
from opentess.web.render import fetch_page, page_number, paging, problems, render

PER_PAGE = 25
CHOICES = 200  # files offered in the pickers (the newest)
UPLOAD_PATH = "/ui/api/files"


def files_of(state: AppState) -> FilesService:
    return api_files.files_of(state)


async def linked_agents(state: AppState, workspace_id: int, file_ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    """The live agents of the workspace each file is linked to, as (id, title), by file id (a
    read-only look at ``agent_files``: the files store answers per agent only)."""
    if not file_ids:
        return {}
    stmt = (
        select(AgentFile.file_id, Agent.id, Agent.title)
        .join(Agent, Agent.id == AgentFile.agent_id)
        .where(AgentFile.file_id.in_(file_ids), Agent.workspace_id == workspace_id, Agent.deleted_at.is_(None))
        .order_by(Agent.title, Agent.id)
    )
    found: dict[int, list[tuple[int, str]]] = {}
    async with state.engine.connect() as conn:
        for file_id, agent_id, title in (await conn.execute(stmt)).all():
            found.setdefault(int(file_id), []).append((int(agent_id), str(title)))
    return found


async def choices(state: AppState, workspace_id: int) -> tuple[list[FileRecord], int]:
    """The newest files of the workspace, for the pickers, and how many there are in all."""
    return await files_of(state).store.search(workspace_id, descending=True, offset=0, limit=CHOICES)


@dataclass(frozen=True, slots=True)
class AgentFiles:
    """The files panel of an agent's page: its files, and the workspace's others to link."""

    linked: list[FileRecord]
    others: list[FileRecord]
    total: int


async def agent_files(state: AppState, visitor: Visitor, agent: AgentRecord) -> AgentFiles:
    service = files_of(state)
    linked = await service.store.agent_files(agent.id)
    newest, total = await choices(state, visitor.workspace.id)
    ids = {f.id for f in linked}
    return AgentFiles(linked, [f for f in newest if f.id not in ids], total)


def here(request: Request) -> str:
    """This page's path and query without its notice: where its forms come back to."""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "notice"])
    return request.url.path + (f"?{query}" if query else "")


# the page -----------------------------------------------------------------------------------------


async def _files_page(
    request: Request, visitor: Visitor, *, status: int = 200, errors: list[str] | None = None
) -> Response:
    state = console_of(request).state
    service = files_of(state)

    async def fetch(offset: int, limit: int) -> tuple[list[FileRecord], int]:
        return await service.store.search(visitor.workspace.id, descending=True, offset=offset, limit=limit)

    records, total, page_no = await fetch_page(page_number(request.query_params.get("page")), PER_PAGE, fetch)
    count, used = await service.store.usage(visitor.workspace.id)
    settings = state.settings

    def page_url(n: int) -> str:
        return "?" + urlencode({"page": n}) if n > 1 else "?"

    return render(
        request,
        "files.html",
        visitor,
        status=status,
        section="files",
        files=records,
        links=await linked_agents(state, visitor.workspace.id, [r.id for r in records]),
        agents=await state.store.agents.list_all(visitor.workspace.id),
        total=total,
        **paging(page_no, total, PER_PAGE, page_url),
        here=here(request) if request.method == "GET" else ui_url(request, "/files"),
        max_file_bytes=settings.max_file_bytes,
        quotas=service.store.quotas,
        usage=(count, used),
        errors=errors or [],
        notice=request.query_params.get("notice", ""),
        upload_url=ui_url(request, "/api/files"),
    )


@page
async def files_page(request: Request, visitor: Visitor) -> Response:
    return await _files_page(request, visitor)


@endpoint
async def file_upload(request: Request, visitor: Visitor) -> Response:
    """``POST /files`` for the session's principal: a multipart form (``file``, optional
    ``process``) streamed to storage; the answer is the File object, or the API's error."""
    return await api_files.upload_file(request, visitor.principal, console_of(request).state)


LimitFor = Callable[[str, str], int | None]


def extend_upload_limit(limit_for: LimitFor) -> LimitFor:
    """The request boundary's body limits, with the console's upload endpoint given the limit of
    ``POST /files`` (it streams the same form): asked of the same rule, never a second copy."""

    def with_console(method: str, path: str) -> int | None:
        found = limit_for(method, path)
        if found is None and method == "POST" and path == UPLOAD_PATH:
            return limit_for("POST", "/files")
        return found

    return with_console


# the forms ----------------------------------------------------------------------------------------


async def _back(request: Request, default: str, notice: str) -> str:
    """Where a form goes back to (its ``next``, a console path), with a notice."""
    form = await form_of(request)
    target = safe_next(request, form.get("next")) or ui_url(request, default)
    target, hash_, anchor = target.partition("#")
    return f"{target}{'&' if '?' in target else '?'}notice={notice}{hash_}{anchor}"


ErrorPage = Callable[[int, list[str]], Awaitable[Response]]


async def acted(request: Request, default: str, notice: str, action: Awaitable[Any], on_error: ErrorPage) -> Response:
    """Run a form's action: back to where the form came from, or its page again with the API's
    error in words (a missing file or agent stays a 404 page)."""
    try:
        await action
    except NotFound:
        raise
    except OpentessError as exc:
        return await on_error(exc.status, problems(exc))
    return RedirectResponse(await _back(request, default, notice), status_code=303)


def _on_files_page(request: Request, visitor: Visitor) -> ErrorPage:
    async def show(status: int, errors: list[str]) -> Response:
        return await _files_page(request, visitor, status=status, errors=errors)

    return show


@page
async def file_process(request: Request, visitor: Visitor) -> Response:
    """Process the file now (again): ``POST /files/{id}/process``."""
    state = console_of(request).state
    file_id = request.path_params["file_id"]
    action = files_of(state).process(file_id, visitor.workspace.id)
    return await acted(request, "/files", f"processing-{file_id}", action, _on_files_page(request, visitor))


@page
async def file_delete(request: Request, visitor: Visitor) -> Response:
    """``DELETE /files/{id}``: unlinked from every agent, its text and bytes removed."""
    state = console_of(request).state
    file_id = request.path_params["file_id"]
    action = files_of(state).delete(file_id, visitor.workspace.id)
    return await acted(request, "/files", f"deleted-{file_id}", action, _on_files_page(request, visitor))


async def link(state: AppState, visitor: Visitor, agent_id: int | None, file_id: int | None) -> None:
    """``POST /agents/{id}/files`` with one file: the agent and the file of this workspace."""
    if agent_id is None:
        raise InvalidInput({"agent_id": ["Choose the agent to link the file to."]})
    if file_id is None:
        raise InvalidInput({"file_id": ["Choose the file to link."]})
    agent = await state.store.agents.get(agent_id, visitor.workspace.id)
    await files_of(state).link(agent.id, visitor.workspace.id, [file_id])


@page
async def file_link(request: Request, visitor: Visitor) -> Response:
    """Link this file to the agent chosen in the form (the files page)."""
    state = console_of(request).state
    form = await form_of(request)
    file_id = request.path_params["file_id"]
    action = link(state, visitor, parse_id(form.get("agent_id")), file_id)
    return await acted(request, "/files", f"linked-{file_id}", action, _on_files_page(request, visitor))


async def unlink(state: AppState, visitor: Visitor, agent_id: int, file_id: int) -> None:
    """``DELETE /agents/{id}/files/{file_id}`` (the file stays)."""
    agent = await state.store.agents.get(agent_id, visitor.workspace.id)
    await files_of(state).unlink(agent.id, visitor.workspace.id, file_id)
