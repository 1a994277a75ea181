"""Executions ("agent responses"): GET one (Tess), and beyond Tess: list with filters, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from starlette.responses import Response

from opentess.api import routing, schemas, wire
from opentess.api.deps import PrincipalDep, StateDep
from opentess.api.errors import json_response
from opentess.api.pagination import envelope, page_of
from opentess.ids import parse_id
from opentess.store.executions import ACTIVE, TERMINAL

router = routing.router()

STATUSES = (*ACTIVE, *TERMINAL)


def _id_filter(request: Request, name: str, errors: dict[str, list[str]]) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    value = parse_id(raw)
    if value is None:
        errors[name] = [f"The {name} field must be an id (a positive integer)."]
    return value


@router.get("/agent-responses", response_model=schemas.ExecutionPage, responses=schemas.native_errors())
async def list_executions(
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    agent_id: Annotated[str | None, Query(description="Only this agent's executions")] = None,
    root_id: Annotated[str | None, Query(description="A whole conversation")] = None,
    status: Annotated[str | None, Query(description="starting, running, succeeded, failed or cancelled")] = None,
    sort: Annotated[str | None, Query(description="asc or desc (default)")] = None,
    q: Annotated[str | None, Query(description="Search the input, the output and the agent's title")] = None,
    page: schemas.PageQuery = None,
    per_page: schemas.PerPageQuery = None,
) -> Response:
    """Executions of the caller's workspace, newest first unless ``sort=asc``; filters
    ``agent_id``, ``root_id`` (a whole conversation) and ``status``."""
    errors: dict[str, list[str]] = {}
    agent = _id_filter(request, "agent_id", errors)
    root = _id_filter(request, "root_id", errors)
    status = status or None
    if status is not None and status not in STATUSES:
        errors["status"] = [f"The selected status is invalid. Valid options: {', '.join(STATUSES)}."]
    sort = (sort or "desc").lower()
    if sort not in ("asc", "desc"):
        errors["sort"] = ["The selected sort is invalid. Valid options: asc, desc."]
    paging = page_of(request, errors)
    records, total = await state.store.executions.search(
        principal.workspace_id,
        agent_id=agent,
        root_id=root,
        status=status,
        q=q or None,
        descending=sort == "desc",
        offset=paging.offset,
        limit=paging.size,
    )
    return json_response(200, envelope(request, [wire.execution(r) for r in records], total, paging))


@router.get(
    "/agent-responses/{execution_id:id}", response_model=schemas.Execution, responses=schemas.native_errors(404)
)
@router.get(
    "/template-responses/{execution_id:id}",
    response_model=schemas.Execution,
    responses=schemas.native_errors(404),
    deprecated=True,
    tags=["legacy"],
)
async def get_execution(execution_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    record = await state.store.executions.get(execution_id, principal.workspace_id)
    return json_response(200, wire.execution(record))


@router.post(
    "/agent-responses/{execution_id:id}/cancel",
    response_model=schemas.Execution,
    responses=schemas.native_errors(404, 409, 503, 504),
)
async def cancel_execution(execution_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Stop a running execution; it ends ``cancelled`` with its partial output. Answers 200
    only with the stored end (see ExecutionService.cancel)."""
    return json_response(200, wire.execution(await state.service.cancel(principal, execution_id)))
