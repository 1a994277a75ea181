"""API tokens of the signed-in user: list, create (the secret shown once), revoke, lower the
limits. The rules are the API's (opentess.api.tokens, opentess.authority), applied to the
session's principal: a session's own limits are the server's defaults for a token, so a token
made here never gets more than a token made without limits by the operator would have."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opentess.api import tokens as api_tokens
from opentess.clock import utcnow
from opentess.errors import OpentessError, parse_model
from opentess.store import TokenRecord
from opentess.web.console import Visitor, console_of, form_of, page, ui_url
from opentess.web.render import problems, render


def _status(token: TokenRecord) -> str:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= utcnow():
        return "expired"
    return "active"


async def _page(
    request: Request,
    visitor: Visitor,
    *,
    status: int = 200,
    secret: str | None = None,
    created: TokenRecord | None = None,
    errors: list[str] | None = None,
    asked: dict[str, str] | None = None,
    notice: str = "",
) -> Response:
    state = console_of(request).state
    tokens = await state.store.tokens.for_user(visitor.user.id)
    return render(
        request,
        "tokens.html",
        visitor,
        status=status,
        section="tokens",
        tokens=sorted(tokens, key=lambda t: (_status(t) != "active", -t.id)),
        status_of=_status,
        secret=secret,
        created=created,
        errors=errors or [],
        asked=asked or {},
        notice=notice or request.query_params.get("notice", ""),
        default_rpm=state.settings.rate_limit_rpm,
        default_concurrency=state.settings.rate_limit_concurrency,
    )


@page
async def tokens_page(request: Request, visitor: Visitor) -> Response:
    return await _page(request, visitor)


def _body(form: FormData, names: tuple[str, ...]) -> dict[str, Any]:
    """The JSON body the API would have been sent: numbers as numbers, blank fields left out."""
    body: dict[str, Any] = {}
    for name in names:
        raw = form.get(name)
        text = raw.strip() if isinstance(raw, str) else ""
        if text == "":
            continue
        if name == "name":
            body[name] = text
            continue
        try:
            number = float(text)
        except ValueError:
            body[name] = text  # refused by the API's schema, in its words
            continue
        body[name] = int(number) if number.is_integer() and name != "expires_in_days" else number
    return body


@page
async def token_create(request: Request, visitor: Visitor) -> Response:
    """Create a token; the answer is the only page that ever shows its secret."""
    state = console_of(request).state
    form = await form_of(request)
    body = _body(form, ("name", "expires_in_days", "rpm_limit", "concurrency_limit"))
    try:
        spec = parse_model(api_tokens.TokenCreate, body)
        record, secret = await api_tokens.create_for(state, visitor.principal, spec)
    except OpentessError as exc:
        asked = {k: str(v) for k, v in body.items()}
        return await _page(request, visitor, status=exc.status, errors=problems(exc), asked=asked)
    return await _page(request, visitor, status=201, secret=secret, created=record)


@page
async def token_revoke(request: Request, visitor: Visitor) -> Response:
    state = console_of(request).state
    record = await api_tokens.revoke_for(state, visitor.principal, request.path_params["token_id"])
    return RedirectResponse(ui_url(request, f"/tokens?notice=revoked-{record.id}"), status_code=303)


@page
async def token_limits(request: Request, visitor: Visitor) -> Response:
    """Lower a token's limits (blank: the server's default, which may only lower them too)."""
    state = console_of(request).state
    form = await form_of(request)
    body = _body(form, ("rpm_limit", "concurrency_limit"))
    for name in ("rpm_limit", "concurrency_limit"):
        body.setdefault(name, None)
    try:
        await api_tokens.update_for(state, visitor.principal, request.path_params["token_id"], body)
    except OpentessError as exc:
        if exc.status == 404:
            raise  # another user's token: the page of a missing one
        return await _page(request, visitor, status=exc.status, errors=problems(exc))
    return RedirectResponse(
        ui_url(request, f"/tokens?notice=limits-{request.path_params['token_id']}"), status_code=303
    )
