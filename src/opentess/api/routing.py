"""Routes: FastAPI's, each opening the per-request exit stack FastAPI keeps for them.

FastAPI opens that stack (where uploaded files are closed) in a middleware, for every request
of every route; here each FastAPI route opens it for its own requests, so that the OpenAI
route — a plain Starlette route that needs none — is not wrapped in it (every layer a request
crosses is crossed again at each of its awaits; measured on the hot route)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

EXIT_STACK_KEY = "fastapi_middleware_astack"


class Route(APIRoute):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if EXIT_STACK_KEY in scope:
            await super().handle(scope, receive, send)
            return
        async with AsyncExitStack() as stack:
            scope[EXIT_STACK_KEY] = stack
            await super().handle(scope, receive, send)


def router(**kwargs: Any) -> APIRouter:
    """An APIRouter of these routes."""
    return APIRouter(route_class=Route, **kwargs)
