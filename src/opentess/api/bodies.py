"""Request bodies: JSON objects, or a clear 400 in the route's wire format."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from opentess.errors import BadRequest


async def read_json_object(request: Request, *, empty_is_object: bool = False) -> dict[str, Any]:
    """The request body as a JSON object. ``empty_is_object``: an empty body is ``{}`` (clients
    send none to routes whose every field is optional), else a 400."""
    return json_object(await request.body(), empty_is_object=empty_is_object)


async def receive_body(receive: Receive) -> bytes:
    """The whole body of a request, read from the ASGI channel as Starlette's ``Request.body``
    reads it (ClientDisconnect if the client leaves first), without its request object and
    async generator: for a route that needs nothing else of them (the hot route)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def json_object(raw: bytes, *, empty_is_object: bool = False) -> dict[str, Any]:
    """``raw`` as a JSON object, or a 400 saying what is wrong with it."""
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
