"""Agents: the Tess listing and detail routes (contract §2), and the management API beyond Tess."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from starlette.responses import Response

from opentess.agents import parse_spec, validate_spec
from opentess.api import routing, schemas, wire
from opentess.api.bodies import read_json_object
from opentess.api.deps import PrincipalDep, StateDep
from opentess.api.errors import json_response
from opentess.api.pagination import envelope, page_of

router = routing.router()
AGENT_TYPES = ("chat", "text", "image", "video")


@router.get("/agents", response_model=schemas.AgentPage, responses=schemas.native_errors())
@router.get(
    "/templates", response_model=schemas.AgentPage, responses=schemas.native_errors(), deprecated=True, tags=["legacy"]
)
async def list_agents(
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    q: Annotated[str | None, Query(description="Search title and descriptions")] = None,
    type: Annotated[str | None, Query(description="chat or text (image and video: none here)")] = None,
    visibility: Annotated[str | None, Query(description="public: the public agents of every workspace")] = None,
    page: schemas.PageQuery = None,
    per_page: schemas.PerPageQuery = None,
) -> Response:
    """The caller's workspace's agents; ``q`` searches title and descriptions, ``type`` filters;
    ``visibility=public`` lists the public agents of every workspace instead."""
    errors: dict[str, list[str]] = {}
    kind = type or None
    if kind is not None and kind not in AGENT_TYPES:
        errors["type"] = [f"The selected type is invalid. Valid options: {', '.join(AGENT_TYPES)}."]
    if visibility not in (None, "", "public"):
        errors["visibility"] = ["The selected visibility is invalid. Valid options: public."]
    paging = page_of(request, errors)
    if kind in ("image", "video"):  # types of Tess's that opentess has no agents of
        return json_response(200, envelope(request, [], 0, paging))
    agents, total = await state.store.agents.search(
        principal.workspace_id,
        q=q or None,
        type=kind,
        offset=paging.offset,
        limit=paging.size,
        public=visibility == "public",
    )
    return json_response(200, envelope(request, [wire.agent(a) for a in agents], total, paging))


@router.get("/agents/{agent_id:id}", response_model=schemas.Agent, responses=schemas.native_errors(404))
@router.get(
    "/templates/{agent_id:id}",
    response_model=schemas.Agent,
    responses=schemas.native_errors(404),
    deprecated=True,
    tags=["legacy"],
)
async def get_agent(agent_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """One agent of the workspace, or a public one of any workspace."""
    agent = await state.store.agents.visible(agent_id, principal.workspace_id)
    return json_response(200, wire.agent(agent))


@router.post(
    "/agents",
    status_code=201,
    response_model=schemas.ManagedAgent,
    responses=schemas.native_errors(400, 409),
    openapi_extra=schemas.documented_body(schemas.AgentCreate),
)
async def create_agent(request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Create an agent in the caller's workspace (beyond Tess). 422 names every invalid field."""
    spec = parse_spec(await read_json_object(request))
    await validate_spec(spec, state.settings, state.sandbox)
    agent = await state.store.agents.create(spec, principal.workspace_id)
    return json_response(201, wire.managed_agent(agent))


@router.patch(
    "/agents/{agent_id:id}",
    response_model=schemas.ManagedAgent,
    responses=schemas.native_errors(400, 404, 409),
    openapi_extra=schemas.documented_body(schemas.AgentUpdate),
)
async def update_agent(agent_id: int, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Change some fields of an agent; the result is validated as a whole."""
    agent = await state.store.agents.get(agent_id, principal.workspace_id)
    changes = await read_json_object(request)
    current = agent.spec().model_dump(exclude_none=True)
    current["questions"] = [q.model_dump(exclude_none=True) for q in agent.questions]
    spec = parse_spec({**current, **changes})
    await validate_spec(spec, state.settings, state.sandbox)
    updated = await state.store.agents.update(agent_id, principal.workspace_id, spec)
    return json_response(200, wire.managed_agent(updated))


@router.delete("/agents/{agent_id:id}", status_code=204, responses=schemas.native_errors(404))
async def delete_agent(agent_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Delete an agent; its executions stay readable."""
    await state.store.agents.delete(agent_id, principal.workspace_id)
    return Response(status_code=204)
