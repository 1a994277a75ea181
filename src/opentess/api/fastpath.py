"""The hot route without the framework: POST /agents/{id}/openai/chat/completions is matched
here, ahead of FastAPI's middleware stack, router and dependency injection, which profiling showed
to cost about a third of the CPU of a call. The handler is the same function the FastAPI route
calls; errors are rendered by the same code; everything else goes to FastAPI."""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from opentess.api import openai_compat
from opentess.api.errors import render, render_unexpected
from opentess.errors import OpentessError

log = logging.getLogger("opentess.api")
_CHAT = re.compile(r"^(?:/api)?/agents/([0-9]{1,18})/openai/chat/completions$", re.ASCII)


class _Template:
    """Stands in for the matched route in the scope, for the metrics and logs."""

    def __init__(self, path: str) -> None:
        self.path = path


_TEMPLATES = {
    False: _Template("/agents/{agent_id}/openai/chat/completions"),
    True: _Template("/api/agents/{agent_id}/openai/chat/completions"),
}


class FastRoute:
    def __init__(self, app: ASGIApp, fastapi_app: Any) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _CHAT.match(scope["path"])
            if match is not None:
                scope["app"] = self.fastapi_app
                scope["route"] = _TEMPLATES[scope["path"].startswith("/api/")]
                request = Request(scope, receive)
                try:
                    response = await openai_compat.handle(int(match.group(1)), request, self.fastapi_app.state.opentess)
                except OpentessError as exc:
                    response = render(scope["path"], exc)
                except Exception as exc:
                    log.exception("unhandled error on %s", scope["path"], exc_info=exc)
                    response = render_unexpected(scope["path"])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
