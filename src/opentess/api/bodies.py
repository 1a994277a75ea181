"""Request bodies: JSON objects, or a clear 400 in the route's wire format."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from opentess.errors import BadRequest


async def read_json_object(request: Request, *, empty_is_object: bool = False) -> dict[str, Any]:
    """The request body as a JSON object. ``empty_is_object``: an empty body is ``{}`` (clients
    send none to routes whose every field is optional), else a 400."""
    raw = await request.body()
    if not raw.strip():
        if empty_is_object:
            return {}
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body
