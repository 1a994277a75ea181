"""The web console (see opentess.capabilities): pages at ``/ui``, their static files from the
installed package, and ``GET /`` sending a browser there. The pages are not part of the API
(they are absent from its OpenAPI document) and take no bearer token: see console.py."""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from opentess.api.boundary import RequestBoundary
from opentess.capabilities import Capability
from opentess.errors import NotFound
from opentess.web import agents, executions, files, memories, playground, signin, tokens, usage
from opentess.web.console import Console, Visitor, page

GET, POST = ["GET"], ["POST"]


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
        Route("/ui/agents/{agent_id:id}/files", agents.agent_file_link, methods=POST),
        Route("/ui/agents/{agent_id:id}/files/{file_id:id}/unlink", agents.agent_file_unlink, methods=POST),
        Route("/ui/files", files.files_page, methods=GET),
        Route("/ui/files/{file_id:id}/process", files.file_process, methods=POST),
        Route("/ui/files/{file_id:id}/delete", files.file_delete, methods=POST),
        Route("/ui/files/{file_id:id}/agents", files.file_link, methods=POST),
        Route("/ui/memories", memories.memories_page, methods=GET),
        Route("/ui/memories/collections", memories.collection_create, methods=POST),
        Route("/ui/memories/collections/{collection_id:id}/rename", memories.collection_rename, methods=POST),
        Route("/ui/memories/collections/{collection_id:id}/delete", memories.collection_delete, methods=POST),
        Route("/ui/memories/collections/{collection_id:id}/memories", memories.memory_create, methods=POST),
        Route("/ui/memories/{memory_id:id}", memories.memory_update, methods=POST),
        Route("/ui/memories/{memory_id:id}/delete", memories.memory_delete, methods=POST),
        # the JSON endpoints of the pages' scripts (session + X-CSRF-Token)
        Route("/ui/api/agents/preview", agents.agent_preview, methods=POST),
        Route("/ui/api/agents/{agent_id:id}/execute", playground.playground_execute, methods=POST),
        Route("/ui/api/executions", executions.executions_live, methods=GET),
        Route("/ui/api/executions/{execution_id:id}", executions.execution_json, methods=GET),
        Route("/ui/api/executions/{execution_id:id}/cancel", executions.execution_cancel_json, methods=POST),
        Route(files.UPLOAD_PATH, files.file_upload, methods=POST),
        Route("/ui/{rest:path}", not_found, methods=GET),
    ]


def install(app: FastAPI) -> None:
    """Add the console's routes and static files to the app, and give its upload endpoint the
    body limit of ``POST /files`` (the request boundary knows the API's upload routes only)."""
    app.router.routes.extend(routes())
    for layer in app.user_middleware:
        factory: object = layer.cls
        limit_for = layer.kwargs.get("limit_for")
        if factory is RequestBoundary and callable(limit_for):
            layer.kwargs["limit_for"] = files.extend_upload_limit(cast(files.LimitFor, limit_for))


def capability(state: Any) -> Capability:
    return Capability("web", extras={"console": Console(state)})
