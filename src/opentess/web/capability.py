"""The web console (see opentess.capabilities): pages at ``/ui``, their static files from the
installed package, and ``GET /`` sending a browser there. The pages are not part of the API
(they are absent from its OpenAPI document) and take no bearer token: see console.py."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from opentess.capabilities import Capability
from opentess.errors import NotFound
from opentess.web import agents, executions, playground, signin, tokens, usage
from opentess.web.console import Console, Visitor, page
from opentess.web.render import extra_sections, render

GET, POST = ["GET"], ["POST"]


@page
async def capability_page(request: Request, visitor: Visitor) -> Response:
    """A capability whose console page is still to come: say so, and point at its API."""
    key = request.url.path.rsplit("/", 1)[-1]
    found = {k: (label, prefix) for k, label, prefix in extra_sections(request)}
    if key not in found:
        raise NotFound("Not found")
    label, prefix = found[key]
    routes = sorted(
        {
            (method, str(getattr(route, "path", "")))
            for route in request.app.routes
            if str(getattr(route, "path", "")).startswith(prefix)
            for method in sorted(getattr(route, "methods", None) or ())
            if method != "HEAD"
        }
    )
    return render(request, "capability.html", visitor, section=key, label=label, routes=routes)


@page
async def not_found(request: Request, visitor: Visitor) -> Response:
    raise NotFound("There is no such page in the console.")


def routes() -> list[BaseRoute]:
    return [
        Route("/", signin.home, methods=GET),
        Route("/ui", signin.console_home, methods=GET),
        Mount("/ui/static", StaticFiles(packages=[("opentess.web", "static")]), name="console-static"),
        Route("/ui/signin", signin.signin_form, methods=GET),
        Route("/ui/signin", signin.signin, methods=POST),
        Route("/ui/signout", signin.signout, methods=POST),
        Route("/ui/setup", signin.setup_form, methods=GET),
        Route("/ui/setup", signin.setup, methods=POST),
        Route("/ui/workspace", signin.switch_workspace, methods=POST),
        Route("/ui/agents", agents.agents_list, methods=GET),
        Route("/ui/agents/new", agents.agent_new, methods=GET),
        Route("/ui/agents/new", agents.agent_create, methods=POST),
        Route("/ui/agents/{agent_id:id}", agents.agent_edit, methods=GET),
        Route("/ui/agents/{agent_id:id}", agents.agent_update, methods=POST),
        Route("/ui/agents/{agent_id:id}/delete", agents.agent_delete_confirm, methods=GET),
        Route("/ui/agents/{agent_id:id}/delete", agents.agent_delete, methods=POST),
        Route("/ui/playground", playground.playground_index, methods=GET),
        Route("/ui/playground/{agent_id:id}", playground.playground, methods=GET),
        Route("/ui/executions", executions.executions_list, methods=GET),
        Route("/ui/executions/{execution_id:id}", executions.execution_detail, methods=GET),
        Route("/ui/executions/{execution_id:id}/cancel", executions.execution_cancel, methods=POST),
        Route("/ui/usage", usage.usage_page, methods=GET),
        Route("/ui/tokens", tokens.tokens_page, methods=GET),
        Route("/ui/tokens", tokens.token_create, methods=POST),
        Route("/ui/tokens/{token_id:id}/revoke", tokens.token_revoke, methods=POST),
        Route("/ui/tokens/{token_id:id}/limits", tokens.token_limits, methods=POST),
        Route("/ui/files", capability_page, methods=GET),
        Route("/ui/memories", capability_page, methods=GET),
        # the JSON endpoints of the pages' scripts (session + X-CSRF-Token)
        Route("/ui/api/agents/preview", agents.agent_preview, methods=POST),
        Route("/ui/api/agents/{agent_id:id}/execute", playground.playground_execute, methods=POST),
        Route("/ui/api/executions", executions.executions_live, methods=GET),
        Route("/ui/api/executions/{execution_id:id}", executions.execution_json, methods=GET),
        Route("/ui/api/executions/{execution_id:id}/cancel", executions.execution_cancel_json, methods=POST),
        Route("/ui/{rest:path}", not_found, methods=GET),
    ]


def install(app: FastAPI) -> None:
    """Add the console's routes and static files to the app."""
    app.router.routes.extend(routes())


def capability(state: Any) -> Capability:
    return Capability("web", extras={"console": Console(state)})
