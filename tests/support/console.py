"""The web console in tests: a seeded server of its own (sign-in limits are counted per server,
so the console's tests neither exhaust nor inherit the shared server's), passwords, signed-in
HTTP clients, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opentess.db.engine import make_engine
from opentess.settings import Settings
from opentess.store import Store, close_store
from opentess.web.accounts import Accounts
from opentess.web.passwords import hash_password
from tests.support.live import LiveServer
from tests.support.world import World, make_settings, seed

PASSWORD = "correct horse battery"
ALICE = "alice@example.com"
BOB = "bob@example.com"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def set_password(settings: Settings, email: str, password: str = PASSWORD) -> None:
    async def go() -> None:
        store = Store(make_engine(settings))
        try:
            user = await store.users.by_email(email)
            await Accounts(store.engine).set_password(user.id, hash_password(password))
        finally:
            await close_store(store)

    asyncio.run(go())


@dataclass
class Site:
    """A seeded server whose users Alice and Bob have console passwords."""

    world: World
    server: LiveServer

    @property
    def url(self) -> str:
        return self.server.url

    @contextmanager
    def client(self, email: str | None = None) -> Iterator[httpx.Client]:
        """An HTTP client of the console, signed in as ``email`` when given."""
        with httpx.Client(base_url=self.url, timeout=60, follow_redirects=False) as client:
            if email is not None:
                answer = sign_in(client, email)
                assert answer.status_code == 303, answer.text
            yield client


def start_site(data_dir: Path, upstream_url: str, **overrides: Any) -> Site:
    # tests sign in often: the sign-in limits have a test of their own, on a server of its own
    limits = {"console_signin_account_rpm": 10_000, "console_signin_address_rpm": 10_000}
    world = seed(make_settings(data_dir, upstream_url, **{**limits, **overrides}))
    for email in (ALICE, BOB):
        set_password(world.settings, email)
    return Site(world, LiveServer(world.settings).start())


def form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found, html[:500]
    return found.group(1)


def sign_in(client: httpx.Client, email: str, password: str = PASSWORD, next_: str = "") -> httpx.Response:
    """Sign in through the form, as a browser does (its CSRF token, its cookie)."""
    token = form_token(client.get("/ui/signin").text)
    return client.post("/ui/signin", data={"email": email, "password": password, "csrf_token": token, "next": next_})


def csrf_of(client: httpx.Client) -> str:
    """The CSRF token of the client's session (every page carries it)."""
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/ui/agents").text)
    assert found, "not signed in"
    return found.group(1)


# -- the browser -------------------------------------------------------------------------------


def chromium_path() -> str | None:
    """Debian's chromium (``OPENTESS_TEST_CHROMIUM`` names another build); None when missing."""
    named = os.environ.get("OPENTESS_TEST_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def browser_or_skip() -> Iterator[Any]:
    """A headless chromium, launched by Playwright with nothing downloaded; the browser tests
    are skipped, naming what is missing, on a machine without it."""
    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; scripts/test does it as root)")
    from playwright.sync_api import sync_playwright

    # Playwright gives every launch a fresh, temporary user-data-dir (no profile is shared)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def save_screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def browser_sign_in(page: Any, site: Site, email: str) -> None:
    page.goto(f"{site.url}/ui")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/ui/agents$"))


def add_member(settings: Settings, email: str, workspace_id: int, password: str = PASSWORD) -> int:
    """A new user with a console password, also a member of ``workspace_id``; their id."""

    async def go() -> int:
        store = Store(make_engine(settings))
        try:
            user, _ = await store.users.create(email)
            await store.users.add_member(workspace_id, user.id)
            await Accounts(store.engine).set_password(user.id, hash_password(password))
            return user.id
        finally:
            await close_store(store)

    return asyncio.run(go())


def switch_workspace(client: httpx.Client, workspace_id: int) -> None:
    answer = client.post("/ui/workspace", data={"csrf_token": csrf_of(client), "workspace_id": str(workspace_id)})
    assert answer.status_code == 303, answer.text


def wait_for_file(client: httpx.Client, token: str, file_id: int, timeout_s: float = 120) -> dict[str, Any]:
    """The file once it is no longer ``waiting`` (asked of the API, as its clients poll)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = client.get(f"/files/{file_id}", headers={"Authorization": f"Bearer {token}"}).json()
        if body["status"] != "waiting":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"file {file_id} still waiting: {body}")
        time.sleep(0.05)
