"""Workspaces (beyond Tess): the caller's workspaces, and their members — owners add and remove
them, as `opentess workspaces members` does for the operator."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from opentess.api import routing, schemas
from opentess.api.bodies import read_json_object
from opentess.api.deps import AppState, PrincipalDep, StateDep
from opentess.api.errors import json_response
from opentess.auth import Principal
from opentess.clock import laravel
from opentess.errors import Forbidden, NotFound, parse_model
from opentess.store.users import ROLES, MemberRecord

router = routing.router(tags=["workspaces"])


class Workspace(BaseModel):
    id: int
    name: str
    owner_id: int
    role: str = Field(description="The caller's role there: owner or member")
    created_at: str


class WorkspaceList(BaseModel):
    data: list[Workspace]


class Member(BaseModel):
    user_id: int
    email: str
    name: str
    role: str
    joined_at: str


class MemberList(BaseModel):
    data: list[Member]


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320, description="An existing user's email")
    role: str = Field(default="member", description=f"One of: {', '.join(ROLES)}")


def _member(member: MemberRecord) -> dict[str, Any]:
    return {
        "user_id": member.user_id,
        "email": member.email,
        "name": member.name,
        "role": member.role,
        "joined_at": laravel(member.joined_at),
    }


async def _role(state: AppState, principal: Principal, workspace_id: int, owner: bool) -> None:
    """A workspace the caller is not in is a 404 (as a missing one); managing members takes its
    owner role (403)."""
    role = await state.store.users.role(principal.user_id, workspace_id)
    if role is None:
        raise NotFound("Workspace not found")
    if owner and role != "owner":
        raise Forbidden("Only an owner of the workspace can change its members.")


@router.get("/workspaces", response_model=WorkspaceList, responses=schemas.native_errors())
async def list_workspaces(principal: PrincipalDep, state: StateDep) -> Response:
    """The workspaces the caller belongs to (send one's id as `x-workspace-id` to act in it)."""
    rows = await state.store.users.workspaces_of(principal.user_id)
    data = [
        {"id": ws.id, "name": ws.name, "owner_id": ws.owner_id, "role": role, "created_at": laravel(ws.created_at)}
        for ws, role in rows
    ]
    return json_response(200, {"data": data})


@router.get("/workspaces/{workspace_id:id}/members", response_model=MemberList, responses=schemas.native_errors(404))
async def list_members(workspace_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    await _role(state, principal, workspace_id, owner=False)
    return json_response(200, {"data": [_member(m) for m in await state.store.users.members(workspace_id)]})


@router.post(
    "/workspaces/{workspace_id:id}/members",
    status_code=201,
    response_model=Member,
    responses=schemas.native_errors(400, 404),
    openapi_extra=schemas.documented_body(MemberAdd),
)
async def add_member(workspace_id: int, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Add an existing user to the workspace, or change their role there (owners only)."""
    await _role(state, principal, workspace_id, owner=True)
    spec = parse_model(MemberAdd, await read_json_object(request))
    try:
        user = await state.store.users.by_email(spec.email)
    except NotFound as exc:
        raise NotFound(f"No user with email {spec.email}") from exc
    member = await state.store.users.add_member(workspace_id, user.id, spec.role)
    state.auth.forget_memberships()
    return json_response(201, _member(member))


@router.delete(
    "/workspaces/{workspace_id:id}/members/{user_id:id}", status_code=204, responses=schemas.native_errors(404)
)
async def remove_member(workspace_id: int, user_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Remove a member (owners only; the workspace's creator stays)."""
    await _role(state, principal, workspace_id, owner=True)
    await state.store.users.remove_member(workspace_id, user_id)
    state.auth.forget_memberships()
    return Response(status_code=204)
