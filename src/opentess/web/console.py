"""The console's plumbing: who is signed in (the visitor), the CSRF rule, and the two kinds of
endpoint — HTML pages and the small JSON endpoints their scripts call.

A session is a cookie scoped to ``/ui``: it never reaches the API's routes, and the API reads
only ``Authorization: Bearer`` tokens, so a session never works as a token. Inside the console a
session becomes a ``Principal`` of its own (``token_id`` = the session's id, negated), and the
console calls the same functions the API routes call with it: the same service, the same rules,
the same workspace scoping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opentess.api.deps import AppState, app_state
from opentess.api.errors import json_response
from opentess.auth import Principal
from opentess.errors import Forbidden, NotFound, OpentessError
from opentess.limits import Limits
from opentess.store import UserRecord, WorkspaceRecord
from opentess.web.accounts import Accounts, SessionRecord
from opentess.web.passwords import Hashing
from opentess.web.render import error_page
from opentess.web.signing import Signer, same

log = logging.getLogger("opentess.web")

SESSION_COOKIE = "opentess_session"
FORM_COOKIE = "opentess_form"  # binds the sign-in and setup forms' CSRF tokens to this browser
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in form, JSON endpoints answer 401."""


class CsrfRejected(Forbidden):
    def __init__(self) -> None:
        super().__init__(
            "This request did not carry the console's security token (an old page, or a page of "
            "another site). Reload the page and try again."
        )


@dataclass(frozen=True, slots=True)
class Visitor:
    """The signed-in person, the workspace the console shows them, and the principal the
    console acts as on their behalf."""

    user: UserRecord
    session: SessionRecord
    csrf: str
    workspace: WorkspaceRecord
    workspaces: list[tuple[WorkspaceRecord, str]]
    principal: Principal


class Console:
    """The console's long-lived objects in one server process."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.accounts = Accounts(state.engine)
        self.hashing = Hashing()
        self._signer: Signer | None = None
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.state.settings.console_enabled

    @property
    def lifetime(self) -> timedelta:
        return timedelta(hours=self.state.settings.console_session_hours)

    async def signer(self) -> Signer:
        # read once per process: the key changes only when an operator deletes it (then restart)
        if self._signer is None:
            async with self._lock:
                if self._signer is None:
                    self._signer = Signer(await self.accounts.signing_key())
        return self._signer

    def limits(self) -> Limits:
        """A session's limits: the server's defaults for a token, and the workspace's limits."""
        settings = self.state.settings
        return Limits(
            token_rpm=settings.rate_limit_rpm,
            token_concurrency=settings.rate_limit_concurrency,
            workspace_rpm=settings.workspace_rate_limit_rpm,
            workspace_concurrency=settings.workspace_rate_limit_concurrency,
        )

    async def visitor(self, request: Request) -> Visitor:
        """The visitor of this request; SignInRequired without a live session."""
        signer = await self.signer()
        secret = signer.session_secret(request.cookies.get(SESSION_COOKIE), self.lifetime.total_seconds())
        if secret is None:
            raise SignInRequired()
        session = await self.accounts.session(secret)
        if session is None:
            raise SignInRequired()
        store = self.state.store
        try:
            user = await store.users.get(session.user_id)
        except NotFound as exc:
            raise SignInRequired() from exc
        workspaces = await store.users.workspaces_of(user.id)
        if not workspaces:
            raise Forbidden(
                "You belong to no workspace: an operator can add you to one with `opentess workspaces members add`."
            )
        ids = {ws.id: ws for ws, _ in workspaces}
        # the workspace chosen in this session while still a member, else the user's default
        workspace = ids.get(session.workspace_id or 0) or ids.get(user.default_workspace_id or 0) or workspaces[0][0]
        principal = Principal(-session.id, user.id, workspace.id, self.limits())
        visitor = Visitor(user, session, signer.csrf_token(secret), workspace, workspaces, principal)
        request.state.visitor = visitor
        return visitor


def console_of(request: Request) -> Console:
    console = app_state(request).capabilities["web"].extras["console"]
    assert isinstance(console, Console)
    return console


def ui_url(request: Request, path: str = "") -> str:
    """A console URL as the browser must ask for it (with the proxy's path prefix)."""
    return f"{request.scope.get('root_path', '')}/ui{path}"


def safe_next(request: Request, value: Any) -> str | None:
    """A path inside the console to go back to after signing in; None for anything else (an
    open redirect would send people from a trusted link to another site)."""
    ui = ui_url(request)
    if not isinstance(value, str) or "\\" in value or value.startswith("//"):
        return None
    return value if value == ui or value.startswith((f"{ui}/", f"{ui}?")) else None


def secure_cookies(request: Request, console: Console) -> bool:
    """Secure cookies when the browser speaks https to us (directly, through a proxy whose
    X-Forwarded-Proto the server trusts, or as the configured public URL says)."""
    public = console.state.settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def set_cookie(response: Response, request: Request, console: Console, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=ui_url(request),
        secure=secure_cookies(request, console),
        httponly=True,
        samesite="lax",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=ui_url(request), httponly=True, samesite="lax")


def check_csrf(visitor: Visitor, given: str | None) -> None:
    if not same(visitor.csrf, given):
        raise CsrfRejected()


async def form_of(request: Request) -> FormData:
    """The submitted form (Starlette keeps it: every later call gets the same one)."""
    return await request.form(max_files=0, max_fields=2000)


PageHandler = Callable[[Request, Visitor], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def page(handler: PageHandler) -> Endpoint:
    """A console page: signed-in visitors only (others are sent to the sign-in form and back),
    a CSRF token on every form it receives, and any error rendered as a page in words."""

    async def endpoint(request: Request) -> Response:
        console = console_of(request)
        if not console.enabled:
            return error_page(request, None, NotFound("Not found"))
        try:
            visitor = await console.visitor(request)
        except SignInRequired:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.method in UNSAFE:
                target = ui_url(request)
            return RedirectResponse(f"{ui_url(request, '/signin')}?next={quote(target)}", status_code=303)
        except OpentessError as exc:
            return error_page(request, None, exc)
        try:
            if request.method in UNSAFE:
                form = await form_of(request)
                token = form.get(CSRF_FIELD)
                check_csrf(visitor, token if isinstance(token, str) else None)
            return await handler(request, visitor)
        except OpentessError as exc:
            return error_page(request, visitor, exc)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def endpoint(handler: PageHandler) -> Endpoint:
    """A JSON endpoint of the console's scripts: a session (401 without), the CSRF token in
    the X-CSRF-Token header of every state-changing call (403 without), errors in the API's
    native shape (they are the API's errors)."""

    async def run(request: Request) -> Response:
        console = console_of(request)
        if not console.enabled:
            raise NotFound("Not found")
        try:
            visitor = await console.visitor(request)
        except SignInRequired:
            return json_response(401, {"message": "Sign in to the console first.", "error": "Unauthenticated"})
        if request.method in UNSAFE:
            check_csrf(visitor, request.headers.get(CSRF_HEADER))
        return await handler(request, visitor)

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run
