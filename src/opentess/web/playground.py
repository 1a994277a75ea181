"""The playground: a form made from the agent's questions and a chat that streams.

The page's script calls ``POST /ui/api/agents/{id}/execute``: the API's own ``/execute`` route
function, called with the session's principal instead of a token's — the same parsing, the
same service, the same SSE events (``running`` deltas, then ``completed``, ``failed`` or
``cancelled``). The session cookie and the CSRF header stand where the bearer token stands on
the API; the session itself is never accepted by the API."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from opentess.api import execute as api_execute
from opentess.errors import NotFound
from opentess.ids import parse_id
from opentess.questions import RESERVED, Question, default_of
from opentess.store import AgentRecord
from opentess.web import files as web_files
from opentess.web import memories as web_memories
from opentess.web.console import Visitor, console_of, endpoint, page
from opentess.web.render import render


@page
async def playground_index(request: Request, visitor: Visitor) -> Response:
    agents = await console_of(request).state.store.agents.list_all(visitor.workspace.id)
    return render(request, "playground_index.html", visitor, section="playground", agents=agents)


def _field(q: Question) -> dict[str, Any]:
    default = default_of(q)
    return {
        "name": q.name,
        "type": q.type,
        "label": q.description or q.name.replace("_", " ").replace("-", " ").capitalize(),
        "description": q.description,
        "required": q.required,
        "options": q.options or [],
        "default": default,
        "placeholder": q.placeholder or "",
        "min": q.min,
        "max": q.max,
        "max_length": q.max_length,
    }


@page
async def playground(request: Request, visitor: Visitor) -> Response:
    """Run one agent; ``?root_id=N`` continues that execution's conversation."""
    state = console_of(request).state
    agent: AgentRecord = await state.store.agents.visible(request.path_params["agent_id"], visitor.workspace.id)
    history: list[dict[str, Any]] = []
    fields_used: dict[str, Any] = {}
    root_id = parse_id(request.query_params.get("root_id"))
    if root_id is not None:
        try:
            conversation = await state.store.executions.conversation(root_id, agent.id, visitor.workspace.id)
        except NotFound:
            root_id = None  # not a conversation of this agent here: start a new one
        else:
            root_id = conversation.root_id
            history = conversation.history
            fields_used = conversation.fields
    steering = {name: agent.question(name) for name in ("model", "temperature", "tools")}
    fields = [_field(q) for q in agent.questions if q.name not in RESERVED]
    for f in fields:
        if f["name"] in fields_used:
            f["default"] = fields_used[f["name"]]
    # what a call may name beside its fields: the workspace's files and the user's collections
    files, files_total = await web_files.choices(state, visitor.workspace.id)
    collections, _ = await web_memories.collections(state, visitor.user.id)
    own_files = (
        await web_files.files_of(state).store.agent_files(agent.id)
        if agent.workspace_id == visitor.workspace.id
        else []
    )
    return render(
        request,
        "playground.html",
        visitor,
        section="playground",
        agent=agent,
        fields=fields,
        model=_field(steering["model"]) if steering["model"] else None,
        temperature=_field(steering["temperature"]) if steering["temperature"] else None,
        tools=_field(steering["tools"]) if steering["tools"] else None,
        default_model=state.settings.default_model,
        history=history,
        root_id=root_id,
        public_url=state.settings.public_url or "",
        files=files,
        files_total=files_total,
        own_files=own_files,
        collections=collections,
    )


@endpoint
async def playground_execute(request: Request, visitor: Visitor) -> Response:
    """``POST /agents/{id}/execute`` for the session's principal (see the module's docstring)."""
    state = console_of(request).state
    return await api_execute.execute(request.path_params["agent_id"], request, visitor.principal, state)
