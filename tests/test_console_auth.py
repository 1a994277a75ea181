"""The console's sign-in and session rules, over HTTP against a live server: passwords, the
session cookie, CSRF, sign-out, setup links, the sign-in rate limits, and that a session is
never an API credential."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from opentess.cli import cli
from opentess.cli.serve import _prepare
from opentess.db.engine import make_engine, migrate
from opentess.settings import Settings
from opentess.store import Store, close_store
from opentess.web.accounts import Accounts
from opentess.web.passwords import hash_password, verify_password
from tests.support.console import ALICE, BOB, PASSWORD, Site, csrf_of, form_token, sign_in, start_site
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer


@pytest.fixture(scope="module")
def site(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    started = start_site(tmp_path_factory.mktemp("console-auth"), upstream.url)
    yield started
    started.server.stop()


def test_root_sends_browsers_to_the_console_and_api_clients_a_404(site: Site) -> None:
    with site.client() as client:
        browser = client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert browser.status_code == 303 and browser.headers["location"] == "/ui"
        api = client.get("/", headers={"Accept": "application/json"})
        assert api.status_code == 404 and api.json()["error"] == "Not found"
        assert client.get("/ui").headers["location"] == "/ui/agents"


def test_pages_send_visitors_without_a_session_to_sign_in(site: Site) -> None:
    with site.client() as client:
        page = client.get("/ui/executions?status=failed")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/signin?next=/ui/executions%3Fstatus%3Dfailed"
        script = client.get("/ui/api/executions")
        assert script.status_code == 401 and script.json()["error"] == "Unauthenticated"


def test_a_sign_in_sets_a_hardened_session_cookie(site: Site) -> None:
    """HttpOnly, SameSite=Lax, scoped to /ui; Secure when the browser speaks https (here
    through a proxy on this host that says so in X-Forwarded-Proto)."""
    with site.client() as client:
        answer = sign_in(client, ALICE, next_="/ui/usage")
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/usage"
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("opentess_session="))
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "path", "samesite", "max-age"} <= attributes and "secure" not in attributes
        assert "Path=/ui" in cookie and "SameSite=lax" in cookie
        assert client.get("/ui/usage").status_code == 200
    with site.client() as client:
        token = form_token(client.get("/ui/signin").text)
        proxied = client.post(
            "/ui/signin",
            data={"email": ALICE, "password": PASSWORD, "csrf_token": token},
            headers={"X-Forwarded-Proto": "https"},
        )
        cookie = next(c for c in proxied.headers.get_list("set-cookie") if c.startswith("opentess_session="))
        assert "Secure" in cookie


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(site: Site) -> None:
    with site.client() as client:
        wrong = sign_in(client, ALICE, "not the password")
        unknown = sign_in(client, "nobody@example.com", "not the password")
        empty = sign_in(client, "", "")
    for answer in (wrong, unknown, empty):
        assert answer.status_code == 401
        assert "Wrong email or password." in answer.text
        assert "opentess_session=" not in answer.headers.get("set-cookie", "")


def test_the_sign_in_form_needs_its_own_csrf_token(site: Site) -> None:
    """A page of another site cannot sign a browser in (to an account of its choosing)."""
    with site.client() as client:
        client.get("/ui/signin")
        forged = client.post("/ui/signin", data={"email": ALICE, "password": PASSWORD, "csrf_token": "x" * 64})
        assert forged.status_code == 403 and "has expired or did not come from this console" in forged.text
        assert "opentess_session=" not in forged.headers.get("set-cookie", "")
    with site.client() as other:  # a token taken from one browser is worthless in another
        token = form_token(httpx.get(f"{site.url}/ui/signin").text)
        assert (
            other.post("/ui/signin", data={"email": ALICE, "password": PASSWORD, "csrf_token": token}).status_code
            == 403
        )


@pytest.mark.parametrize("target", ["https://evil.example/ui", "//evil.example/ui", "/agents", "/ui\\@evil"])
def test_sign_in_goes_back_only_to_a_page_of_the_console(site: Site, target: str) -> None:
    with site.client() as client:
        answer = sign_in(client, ALICE, next_=target)
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/agents"


def test_signing_out_ends_the_session_on_the_server(site: Site) -> None:
    """A copy of the cookie taken before signing out opens nothing afterwards."""
    with site.client(ALICE) as client:
        stolen = client.cookies["opentess_session"]
        out = client.post("/ui/signout", data={"csrf_token": csrf_of(client)})
        assert out.status_code == 303 and out.headers["location"] == "/ui/signin?notice=signed-out"
        assert 'opentess_session=""' in out.headers["set-cookie"]
    with site.client() as replay:
        replay.cookies.set("opentess_session", stolen, path="/ui")
        assert replay.get("/ui/agents").status_code == 303


def test_a_forged_or_altered_cookie_opens_nothing(site: Site) -> None:
    with site.client(ALICE) as client:
        good = client.cookies["opentess_session"]
    for bad in (good[:-2] + ("AA" if not good.endswith("AA") else "BB"), "x", good.split(".")[0]):
        with site.client() as client:
            client.cookies.set("opentess_session", bad, path="/ui")
            assert client.get("/ui/agents").status_code == 303


def test_every_state_changing_request_needs_the_csrf_token(site: Site) -> None:
    world = site.world
    with site.client(ALICE) as client:
        csrf = csrf_of(client)
        before = client.get("/ui/tokens").text.count("data-token-id=")
        for data in ({"name": "no-token"}, {"name": "bad-token", "csrf_token": "0" * 64}):
            refused = client.post("/ui/tokens", data=data)
            assert refused.status_code == 403 and "security token" in refused.text
        assert client.get("/ui/tokens").text.count("data-token-id=") == before
        assert client.post(f"/ui/agents/{world.agent_id}/delete", data={}).status_code == 403
        assert client.get(f"/ui/agents/{world.agent_id}").status_code == 200  # still there
        run = {"stream": True, "language": "en", "messages": [{"role": "user", "content": "hi"}]}
        script = client.post(f"/ui/api/agents/{world.agent_id}/execute", json=run)
        assert script.status_code == 403 and script.json()["error"] == "Forbidden"
        other_sessions = client.post(
            f"/ui/api/agents/{world.agent_id}/execute", json=run, headers={"X-CSRF-Token": "0" * 64}
        )
        assert other_sessions.status_code == 403
        allowed = client.post(f"/ui/api/agents/{world.agent_id}/execute", json=run, headers={"X-CSRF-Token": csrf})
        assert allowed.status_code == 200 and '"status":"completed"' in allowed.text


def test_a_session_is_never_an_api_credential(site: Site) -> None:
    with site.client(ALICE) as client:
        cookie = client.cookies["opentess_session"]
        assert [c.path for c in client.cookies.jar] == ["/ui"]  # browsers send it to the console only
    for headers in (
        {"Cookie": f"opentess_session={cookie}"},
        {"Authorization": f"Bearer {cookie}"},
        {"Authorization": f"Bearer {cookie}", "Cookie": f"opentess_session={cookie}"},
    ):
        answer = httpx.get(f"{site.url}/agents", headers=headers)
        assert answer.status_code == 401, headers
    assert httpx.get(f"{site.url}/agents", headers={"Authorization": f"Bearer {site.world.token}"}).status_code == 200


def test_another_workspace_is_invisible(site: Site) -> None:
    """Bob sees none of Alice's agents, executions or tokens: they answer 404 like missing ones."""
    world = site.world
    with site.client(ALICE) as alice:
        csrf = csrf_of(alice)
        run = {"stream": True, "language": "en", "messages": [{"role": "user", "content": "secret plans"}]}
        events = alice.post(f"/ui/api/agents/{world.agent_id}/execute", json=run, headers={"X-CSRF-Token": csrf})
        execution_id = int(re.findall(r'"id":(\d+)', events.text)[0])
    with site.client(BOB) as bob:
        csrf = csrf_of(bob)
        listing = bob.get("/ui/agents").text
        assert "Foreign" in listing and "Translator" not in listing and "Haiku" not in listing
        assert "secret plans" not in bob.get("/ui/executions").text
        for path in (
            f"/ui/agents/{world.agent_id}",
            f"/ui/agents/{world.agent_id}/delete",
            f"/ui/playground/{world.agent_id}",
            f"/ui/executions/{execution_id}",
        ):
            answer = bob.get(path)
            assert answer.status_code == 404, path
        assert "Agent response not found" in bob.get(f"/ui/executions/{execution_id}").text
        for path in (f"/ui/api/executions/{execution_id}", f"/ui/api/executions?agent_id={world.agent_id}"):
            answer = bob.get(path)
            assert answer.status_code == 404 or answer.json()["data"] == [], path
        posts = {
            f"/ui/api/agents/{world.agent_id}/execute": 404,
            f"/ui/api/executions/{execution_id}/cancel": 404,
        }
        for path, status in posts.items():
            assert bob.post(path, json=run, headers={"X-CSRF-Token": csrf}).status_code == status, path
        assert bob.post(f"/ui/agents/{world.agent_id}/delete", data={"csrf_token": csrf}).status_code == 404
        assert bob.post("/ui/tokens/1/revoke", data={"csrf_token": csrf}).status_code == 404
        switch = bob.post("/ui/workspace", data={"csrf_token": csrf, "workspace_id": str(world.workspace_id)})
        assert switch.status_code == 404
    assert (
        httpx.get(f"{site.url}/agents/{world.agent_id}", headers={"Authorization": f"Bearer {world.token}"}).status_code
        == 200
    )


def test_the_workspace_switcher_shows_only_the_visitors_workspaces(site: Site) -> None:
    world = site.world
    with site.client(ALICE) as alice:
        page = alice.get("/ui/agents").text
        assert "Alice&#39;s team" in page and "Bob" not in page.split("<main")[0]
        switched = alice.post(
            "/ui/workspace",
            data={"csrf_token": csrf_of(alice), "workspace_id": str(world.second_workspace_id), "next": "/ui/agents"},
        )
        assert switched.status_code == 303
        listing = alice.get("/ui/agents").text
        assert "Second" in listing and "Translator" not in listing
        alice.post("/ui/workspace", data={"csrf_token": csrf_of(alice), "workspace_id": str(world.workspace_id)})
        assert "Translator" in alice.get("/ui/agents").text


def test_sign_in_attempts_are_limited_per_account_and_per_address(site: Site, tmp_path: Path) -> None:
    """Past the limit even the right password is refused (429 with Retry-After), without
    locking out other accounts until the address's own limit is reached."""
    settings = site.world.settings.model_copy(update={"console_signin_account_rpm": 3, "console_signin_address_rpm": 5})
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(3):
                assert sign_in(client, ALICE, "wrong password").status_code == 401
            limited = sign_in(client, ALICE)
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
            assert "Too many sign-in attempts" in limited.text
            # a refused attempt counts for nothing; another account is still let in...
            assert sign_in(client, BOB).status_code == 303
            client.cookies.clear()  # signed out, for the form again
            assert sign_in(client, BOB).status_code == 303
            client.cookies.clear()
            # ...until the address has made its 5 attempts of the minute
            assert sign_in(client, BOB).status_code == 429
    finally:
        server.stop()


def test_set_password_from_the_cli_ends_the_users_sessions(site: Site) -> None:
    settings = site.world.settings
    env = {"OPENTESS_DATA_DIR": str(settings.data_dir), "OPENTESS_CONFIG": ""}
    runner = CliRunner()
    with site.client(BOB) as bob:
        assert bob.get("/ui/agents").status_code == 200
        short = runner.invoke(cli, ["users", "set-password", BOB, "--password-stdin"], input="short\n", env=env)
        assert short.exit_code == 1 and "at least 8 characters" in short.stderr
        assert bob.get("/ui/agents").status_code == 200
        done = runner.invoke(
            cli, ["users", "set-password", BOB, "--password-stdin"], input="a new long password\n", env=env
        )
        assert done.exit_code == 0, done.stderr
        assert re.fullmatch(rf"password set for {BOB}; \d+ console session\(s\) ended", done.stdout.strip())
        assert bob.get("/ui/agents").status_code == 303
    with site.client() as client:
        assert sign_in(client, BOB).status_code == 401
        assert sign_in(client, BOB, "a new long password").status_code == 303
    prompted = runner.invoke(cli, ["users", "set-password", BOB], input=f"{PASSWORD}\n{PASSWORD}\n", env=env)
    assert prompted.exit_code == 0 and PASSWORD not in prompted.stdout
    unknown = runner.invoke(
        cli, ["users", "set-password", "nobody@example.com", "--password-stdin"], input="x" * 9, env=env
    )
    assert unknown.exit_code == 1 and "no user with email nobody@example.com" in unknown.stderr


def test_first_start_prints_the_console_and_a_setup_link_that_works_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    banner = asyncio.run(_prepare(settings))
    assert "Web console: http://127.0.0.1:8000/ui" in banner
    link = re.search(r"http://127\.0\.0\.1:8000(/ui/setup\?token=\S+)", banner)
    assert link, banner
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            form = client.get(link.group(1))
            assert form.status_code == 200 and "admin@localhost" in form.text
            token = re.search(r'name="token" value="([^"]+)"', form.text)
            assert token
            fields = {"csrf_token": form_token(form.text), "token": token.group(1)}
            differ = client.post("/ui/setup", data={**fields, "password": "long enough!", "confirm": "other one!"})
            assert differ.status_code == 422 and "The two passwords differ." in differ.text
            short = client.post("/ui/setup", data={**fields, "password": "short", "confirm": "short"})
            assert short.status_code == 422 and "at least 8 characters" in short.text
            done = client.post("/ui/setup", data={**fields, "password": "long enough!", "confirm": "long enough!"})
            assert done.status_code == 303 and done.headers["location"] == "/ui/agents"
            assert "Demo chat" in client.get("/ui/agents").text  # signed in at once
            again = client.post("/ui/setup", data={**fields, "password": "an attacker's", "confirm": "an attacker's"})
            assert again.status_code == 410 and "already been used" in again.text
            assert client.get(link.group(1)).status_code == 410
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert sign_in(client, "admin@localhost", "long enough!").status_code == 303
    finally:
        server.stop()
    later = asyncio.run(_prepare(settings))
    assert "Web console: http://127.0.0.1:8000/ui" in later and "/ui/setup" not in later


def test_accounts_on_every_backend(tmp_path: Path, database_url: str | None) -> None:
    """Passwords, sessions and the signing key behave alike on SQLite and PostgreSQL."""
    settings = Settings(data_dir=tmp_path, database_url=database_url)

    async def scenario() -> None:
        engine = make_engine(settings)
        store = Store(engine)
        try:
            await migrate(engine)
            user, ws = await store.users.create(f"accounts-{tmp_path.name}@example.com")
            first, second = Accounts(engine), Accounts(engine)
            assert await first.signing_key() == await second.signing_key()  # one key for every process
            account = await first.by_email(user.email)
            assert account is not None and account.password_hash is None
            assert await first.set_password(user.id, hash_password(PASSWORD), only_if_unset=True)
            assert not await first.set_password(user.id, hash_password("another one"), only_if_unset=True)
            stored = await first.by_id(user.id)
            assert stored is not None and verify_password(stored.password_hash, PASSWORD)
            from datetime import timedelta

            secret = await first.open_session(user.id, ws.id, timedelta(hours=1))
            session = await second.session(secret)
            assert session is not None and (session.user_id, session.workspace_id) == (user.id, ws.id)
            gone = await first.open_session(user.id, ws.id, timedelta(seconds=-1))
            assert await first.session(gone) is None  # past its end
            await first.end_session(secret)
            assert await second.session(secret) is None
            again = await first.open_session(user.id, ws.id, timedelta(hours=1))
            assert await first.set_password(user.id, hash_password("a brand new one"))
            assert await first.session(again) is None  # a new password ends every session
        finally:
            await close_store(store)

    asyncio.run(scenario())
