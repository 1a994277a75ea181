"""Signing in and out, the first password (setup links), and the workspace switch.

Sign-in attempts are counted by the server's rate limiter (in memory, or in Redis across
processes) per account and per client address, before any password is checked; a wrong email
and a wrong password get the same answer after the same work. A new session is made at every
sign-in (nothing a page of another site planted survives it), and signing out deletes it."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opentess.api.errors import render as render_api_error
from opentess.errors import InvalidInput, NotFound, OpentessError, RateLimited
from opentess.ids import parse_id
from opentess.web.accounts import Account
from opentess.web.console import (
    FORM_COOKIE,
    SESSION_COOKIE,
    Console,
    SignInRequired,
    Visitor,
    clear_cookie,
    console_of,
    form_of,
    page,
    safe_next,
    set_cookie,
    ui_url,
)
from opentess.web.passwords import needs_rehash
from opentess.web.render import error_page, render
from opentess.web.signing import SIGNIN_FORM_S, Signer, same

log = logging.getLogger("opentess.web")
WRONG = "Wrong email or password."


async def home(request: Request) -> Response:
    """``GET /``: browsers go to the console; API clients get the API's 404 as before."""
    console = console_of(request)
    if console.enabled and "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(ui_url(request), status_code=303)
    return render_api_error(request.url.path, NotFound("Not found"))


async def console_home(request: Request) -> Response:
    return RedirectResponse(ui_url(request, "/agents"), status_code=303)


async def _form_nonce(request: Request, signer: Signer) -> tuple[str, bool]:
    """This browser's sign-in form nonce, and whether it is new (to be set as a cookie)."""
    nonce = signer.form_nonce(request.cookies.get(FORM_COOKIE))
    return (nonce, False) if nonce else (signer.new_nonce(), True)


async def _form_page(
    request: Request,
    console: Console,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    """A page with a form posted before any session exists, its CSRF token bound to a cookie."""
    signer = await console.signer()
    nonce, new = await _form_nonce(request, signer)
    response = render(request, template, None, status=status, headers=headers, csrf=signer.form_token(nonce), **context)
    if new:
        set_cookie(response, request, console, FORM_COOKIE, signer.form_cookie(nonce), SIGNIN_FORM_S)
    return response


async def _form_csrf_ok(request: Request, console: Console) -> bool:
    signer = await console.signer()
    nonce = signer.form_nonce(request.cookies.get(FORM_COOKIE))
    token = (await form_of(request)).get("csrf_token")
    return nonce is not None and same(signer.form_token(nonce), token if isinstance(token, str) else None)


async def signin_form(request: Request) -> Response:
    console = console_of(request)
    if not console.enabled:
        return error_page(request, None, NotFound("Not found"))
    target = safe_next(request, request.query_params.get("next")) or ""
    try:  # already signed in: straight on
        await console.visitor(request)
        return RedirectResponse(target or ui_url(request, "/agents"), status_code=303)
    except (SignInRequired, OpentessError):
        pass
    notice = request.query_params.get("notice", "")
    return await _form_page(
        request, console, "signin.html", email="", next=target,
        error="", notice=notice,
    )  # fmt: skip


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def signin(request: Request) -> Response:
    console = console_of(request)
    if not console.enabled:
        return error_page(request, None, NotFound("Not found"))
    form = await form_of(request)
    email = str(form.get("email") or "").strip()
    password = str(form.get("password") or "")
    target = safe_next(request, form.get("next")) or ""
    if not await _form_csrf_ok(request, console):
        return await _form_page(
            request, console, "signin.html", status=403, email=email, next=target, notice="",
            error="This sign-in form has expired or did not come from this console: please sign in again.",
        )  # fmt: skip
    settings = console.state.settings
    account_key = hashlib.sha256(email.lower().encode()).hexdigest()[:32]
    try:
        await console.state.admission.limiter.hit(
            [
                (f"console-signin:account:{account_key}", settings.console_signin_account_rpm),
                (f"console-signin:address:{_client(request)}", settings.console_signin_address_rpm),
            ]
        )
    except RateLimited as exc:
        log.warning("console sign-in attempts refused for a while (%s)", _client(request))
        return await _form_page(
            request, console, "signin.html", status=429, headers={"Retry-After": str(exc.retry_after)},
            email=email, next=target, notice="",
            error=f"Too many sign-in attempts. Try again in {exc.retry_after} seconds.",
        )  # fmt: skip
    account = await console.accounts.by_email(email) if email else None
    if not await console.hashing.verify(account.password_hash if account else None, password) or account is None:
        return await _form_page(
            request, console, "signin.html", status=401, email=email, next=target, notice="", error=WRONG
        )
    if account.password_hash is not None and needs_rehash(account.password_hash):
        await console.accounts.rehash(account.user_id, account.password_hash, await console.hashing.hash(password))
    log.info("console sign-in of user %s", account.user_id)
    return await _signed_in(request, console, account, target)


async def _signed_in(request: Request, console: Console, account: Account, target: str) -> Response:
    user = await console.state.store.users.get(account.user_id)
    secret = await console.accounts.open_session(user.id, user.default_workspace_id, console.lifetime)
    signer = await console.signer()
    response = RedirectResponse(target or ui_url(request, "/agents"), status_code=303)
    lifetime = int(console.lifetime.total_seconds())
    set_cookie(response, request, console, SESSION_COOKIE, signer.session_cookie(secret), lifetime)
    clear_cookie(response, request, FORM_COOKIE)
    return response


@page
async def signout(request: Request, visitor: Visitor) -> Response:
    console = console_of(request)
    signer = await console.signer()
    secret = signer.session_secret(request.cookies.get(SESSION_COOKIE), console.lifetime.total_seconds())
    if secret is not None:
        await console.accounts.end_session(secret)
    response = RedirectResponse(ui_url(request, "/signin?notice=signed-out"), status_code=303)
    clear_cookie(response, request, SESSION_COOKIE)
    return response


USED = (
    "This setup link has expired or has already been used. An operator can set a password with "
    "`opentess users set-password EMAIL`."
)


async def _setup_account(request: Request, console: Console, token: str | None) -> Account | None:
    user_id = (await console.signer()).setup_user(token)
    account = await console.accounts.by_id(user_id) if user_id is not None else None
    return account if account is not None and account.password_hash is None else None


async def setup_form(request: Request) -> Response:
    """The first password of a user, from the link a first start prints."""
    console = console_of(request)
    if not console.enabled:
        return error_page(request, None, NotFound("Not found"))
    token = request.query_params.get("token", "")
    account = await _setup_account(request, console, token)
    if account is None:
        return render(request, "setup.html", None, status=410, csrf="", token="", email="", error=USED)
    return await _form_page(request, console, "setup.html", token=token, email=account.email, error="")


async def setup(request: Request) -> Response:
    console = console_of(request)
    if not console.enabled:
        return error_page(request, None, NotFound("Not found"))
    form = await form_of(request)
    token = str(form.get("token") or "")
    account = await _setup_account(request, console, token)
    if account is None:
        return render(request, "setup.html", None, status=410, csrf="", token="", email="", error=USED)
    if not await _form_csrf_ok(request, console):
        return await _form_page(
            request, console, "setup.html", status=403, token=token, email=account.email,
            error="This form has expired or did not come from this console: please try again.",
        )  # fmt: skip
    password = str(form.get("password") or "")
    if password != str(form.get("confirm") or ""):
        return await _form_page(
            request, console, "setup.html", status=422, token=token, email=account.email,
            error="The two passwords differ.",
        )  # fmt: skip
    try:
        hashed = await console.hashing.hash(password)
    except InvalidInput as exc:
        return await _form_page(
            request, console, "setup.html", status=422, token=token, email=account.email,
            error=exc.errors["password"][0],
        )  # fmt: skip
    if not await console.accounts.set_password(account.user_id, hashed, only_if_unset=True):
        return render(request, "setup.html", None, status=410, csrf="", token="", email="", error=USED)
    log.info("console password set through a setup link for user %s", account.user_id)
    return await _signed_in(request, console, account, "")


@page
async def switch_workspace(request: Request, visitor: Visitor) -> Response:
    """Show another of the visitor's workspaces (a workspace of someone else's is refused)."""
    form = await form_of(request)
    workspace_id = parse_id(form.get("workspace_id"))
    if workspace_id not in {ws.id for ws, _ in visitor.workspaces}:
        raise NotFound("You do not belong to this workspace.")
    assert workspace_id is not None
    await console_of(request).accounts.choose_workspace(visitor.session.id, workspace_id)
    return RedirectResponse(safe_next(request, form.get("next")) or ui_url(request, "/agents"), status_code=303)
