"""The web console in a real browser: Debian's headless chromium driven by Playwright, against a
live server and the fake upstream. A failing test leaves the page's screenshot in
test-artifacts/ (named after the test)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.console import ALICE, BOB, Site, browser_or_skip, browser_sign_in, save_screenshot, start_site
from tests.support.fake_upstream import FakeUpstream

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # greenlet, inside Playwright


@pytest.fixture(scope="module")
def site(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    started = start_site(tmp_path_factory.mktemp("console-browser"), upstream.url)
    yield started
    started.server.stop()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    # after the site: Playwright's sync API keeps an event loop running in this thread, where
    # the site's seeding (asyncio.run) could not run any more
    with browser_or_skip() as launched:
        yield launched


def _page(request: pytest.FixtureRequest, browser: Any, site: Site, email: str, **options: Any) -> Iterator[Any]:
    context = browser.new_context(**options)
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    browser_sign_in(page, site, email)
    failed_before = request.session.testsfailed
    yield page
    # the call's report is in by now: a failure of this test leaves its screenshot behind
    if request.session.testsfailed > failed_before:
        save_screenshot(page, request.node.name)
    context.close()
    assert errors == [], errors  # no script of the console threw


@pytest.fixture
def alice(request: pytest.FixtureRequest, browser: Any, site: Site) -> Iterator[Any]:
    yield from _page(request, browser, site, ALICE)


@pytest.fixture
def bob(request: pytest.FixtureRequest, browser: Any, site: Site) -> Iterator[Any]:
    yield from _page(request, browser, site, BOB)


def test_signing_in_lands_on_the_agents(browser: Any, site: Site) -> None:
    """The printed URL, then the form; a wrong password is said in words."""
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{site.url}/")
        assert page.url.endswith("/ui/signin?next=/ui/agents")
        page.get_by_label("Email").fill(ALICE)
        page.get_by_label("Password").fill("not it at all")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
        browser_sign_in(page, site, ALICE)
        expect(page.get_by_role("heading", name="Agents")).to_be_visible()
        expect(page.get_by_role("link", name="Translator")).to_be_visible()
    finally:
        context.close()


def test_create_an_agent_with_two_custom_fields(alice: Any, site: Site) -> None:
    page = alice
    page.get_by_role("link", name="New agent").click()
    page.wait_for_url(re.compile(r".*/ui/agents/new$"))  # and its scripts (waits for "load")
    page.get_by_label("Title", exact=True).fill("Greeter")
    page.get_by_label("Template").fill("Greet {{ person }} in {{ language }}, {{ mood }}.")
    for name, kind in (("person", "text"), ("language", "select")):
        page.get_by_role("button", name="Add a field").click()
        row = page.locator("[data-question]").last
        row.get_by_label("Name").fill(name)
        row.get_by_label("Type").select_option(kind)
    language = page.locator("[data-question]").last
    language.get_by_label("Options").fill("English\nFrench")
    language.get_by_label("Default").fill("German")  # not an option: the API refuses it
    page.get_by_label("fake-gpt").check()
    page.get_by_role("button", name="Create the agent").click()

    # the API's errors, each beside its control
    expect(page.locator("#form-errors")).to_be_visible()
    page.wait_for_load_state()  # the answer's scripts (the preview's) are running
    assert "mood, which is not a question of this agent" in page.locator("#instructions-error").inner_text()
    assert "invalid default" in language.locator(".field-error").inner_text()
    expect(page.get_by_label("Template")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Template").fill("Greet {{ person }} in {{ language }}.")
    language.get_by_label("Default").fill("French")
    page.locator("[data-question]").first.get_by_label("Required").check()
    # the preview renders through the sandbox, with sample values
    page.get_by_label("person").fill("Ada")
    page.get_by_role("button", name="Render the instructions").click()
    page.locator("#preview-output", has_text="Ada").wait_for()
    assert page.locator("#preview-output").inner_text() == "Greet Ada in French."
    page.get_by_role("button", name="Create the agent").click()
    assert page.get_by_role("status").inner_text().startswith("Agent created")
    agent_id = int(re.findall(r"/ui/agents/(\d+)", page.url)[0])

    answer = httpx.get(f"{site.url}/agents/{agent_id}", headers={"Authorization": f"Bearer {site.world.token}"})
    questions = {q["name"]: q for q in answer.json()["questions"]}
    assert questions["person"]["required"] is True and questions["person"]["type"] == "text"
    assert questions["language"]["options"] == ["English", "French"] and questions["language"]["default"] == "French"
    assert questions["model"]["options"] == ["fake-gpt"]


def test_the_playground_streams_continues_and_shows_the_cost(alice: Any, site: Site, upstream: FakeUpstream) -> None:
    page = alice
    upstream.chunks = ["Bonjour", " !", " Comment", " allez", "-vous", " ?"]
    upstream.delay = 0.3
    page.goto(f"{site.url}/ui/playground/{site.world.agent_id}")
    page.get_by_label("Answer language").fill("French")
    page.get_by_label("Model").select_option("fake-gpt")
    page.get_by_label("Message").fill("Hello")
    page.get_by_label("Message").press("Enter")
    # tokens are on the page while the stream is still open
    # (locators, not wait_for_function: the console's CSP forbids evaluating strings)
    page.locator('#chat[data-state="streaming"] .bubble.assistant', has_text="Bonjour").wait_for()
    streaming_text = page.locator(".bubble.assistant").inner_text()
    assert streaming_text.startswith("Bonjour") and streaming_text != "Bonjour ! Comment allez-vous ?"
    meta = page.locator(".bubble.assistant .meta").first
    meta.wait_for()
    expect(page.locator("#chat")).to_have_attribute("data-state", "idle")
    assert "fake-gpt · 11 tokens in, 7 out · 0.0000445 credits · succeeded" in meta.inner_text()
    first_id = int(re.findall(r"execution (\d+)", meta.inner_text())[0])

    # the next message continues the conversation (root_id): the model gets the first turn back
    upstream.delay = 0.0
    upstream.chunks = ["Très", " bien."]
    page.get_by_label("Message").fill("And you?")
    page.get_by_role("button", name="Send").click()
    page.locator(".bubble.assistant .meta").nth(1).wait_for()
    sent = upstream.last["messages"]
    assert [m["content"] for m in sent[1:]] == ["Hello", "Bonjour ! Comment allez-vous ?", "And you?"]
    assert f"Conversation {first_id}" in page.locator("#conversation-label").inner_text()

    # the same call as code, with the conversation's root
    page.get_by_role("button", name="Python").click()
    assert f'"root_id": {first_id}' in page.locator("#snippet").inner_text()

    # Executions: the run with its credits, then its detail
    page.get_by_role("link", name="Executions").click()
    page.wait_for_url(re.compile(r".*/ui/executions$"))
    row = page.locator(f'tr[data-id="{first_id}"]')
    expect(row.locator("[data-credits]")).to_have_text("0.0000445")
    expect(row.locator("[data-status]")).to_have_text("succeeded")
    second = page.locator("tbody tr").first
    second.get_by_role("link").first.click()
    expect(page.get_by_role("heading", name=re.compile(r"Execution \d+ succeeded"))).to_be_visible()
    earlier = page.get_by_role("heading", name=re.compile("Earlier turns"))
    expect(earlier).to_be_visible()
    expect(page.locator("main")).to_contain_text("Bonjour ! Comment allez-vous ?")
    expect(page.locator("[data-credits]")).to_have_text("0.0000445")


def test_stop_cancels_a_slow_run(alice: Any, site: Site, upstream: FakeUpstream) -> None:
    page = alice
    upstream.chunks = [f"word{i} " for i in range(40)]
    upstream.delay = 0.5
    page.goto(f"{site.url}/ui/playground/{site.world.agent_id}")
    page.get_by_label("Answer language").fill("English")
    page.get_by_label("Model").select_option("fake-gpt")
    page.get_by_label("Message").fill("Count slowly")
    page.get_by_role("button", name="Send").click()
    page.locator(".bubble.assistant", has_text="word1").wait_for()
    page.get_by_role("button", name="Stop").click()
    page.locator(".bubble.assistant .meta").nth(1).wait_for()  # "Stopped.", then the usage line
    assert "cancelled" in page.locator(".bubble.assistant").inner_text()
    text = page.locator(".bubble.assistant").inner_text()
    assert "word39" not in text  # it stopped well before its end


def _start_in_background(site: Site, content: str) -> int:
    """An execution of the site's agent started over the API (``/execute`` without waiting):
    its id, while the fake upstream is still answering."""
    started = httpx.post(
        f"{site.url}/agents/{site.world.agent_id}/execute",
        headers={"Authorization": f"Bearer {site.world.token}"},
        json={"model": "fake-gpt", "language": "en", "messages": [{"role": "user", "content": content}]},
    )
    assert started.status_code == 200, started.text
    return int(started.json()["responses"][0]["id"])


def test_cancel_a_running_execution_from_its_list(alice: Any, site: Site, upstream: FakeUpstream) -> None:
    page = alice
    upstream.chunks = [f"w{i} " for i in range(40)]
    upstream.delay = 0.5
    execution_id = _start_in_background(site, "background")
    page.goto(f"{site.url}/ui/executions")
    row = page.locator(f'tr[data-id="{execution_id}"]')
    expect(row.locator("[data-status]")).to_have_text(re.compile("starting|running"))
    page.on("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Cancel").click()
    page.wait_for_url(re.compile(rf".*/ui/executions/{execution_id}\?notice=cancelled$"))
    expect(page.get_by_role("status")).to_have_text("The run was stopped.")
    expect(page.get_by_role("heading", name=f"Execution {execution_id} cancelled")).to_be_visible()


def test_running_executions_update_themselves(alice: Any, site: Site, upstream: FakeUpstream) -> None:
    """The list's rows and a detail page of a running execution follow it to its end, unreloaded
    by the person looking at them."""
    page = alice
    upstream.chunks = [f"t{i} " for i in range(8)]
    upstream.delay = 0.4
    execution_id = _start_in_background(site, "watch me")
    page.goto(f"{site.url}/ui/executions/{execution_id}")
    expect(
        page.get_by_role("heading", name=re.compile(rf"Execution {execution_id} (starting|running)"))
    ).to_be_visible()
    expect(page.get_by_role("heading", name=f"Execution {execution_id} succeeded")).to_be_visible()
    expect(page.locator("#output")).to_have_text("t0 t1 t2 t3 t4 t5 t6 t7")

    second_id = _start_in_background(site, "and me")
    page.goto(f"{site.url}/ui/executions")
    row = page.locator(f'tr[data-id="{second_id}"]')
    expect(row.locator("[data-status]")).to_have_text(re.compile("starting|running"))
    expect(row.locator("[data-status]")).to_have_text("succeeded")
    expect(row.locator("[data-credits]")).to_have_text("0.0000445")


def test_create_and_revoke_a_token(alice: Any, site: Site) -> None:
    page = alice
    page.get_by_role("link", name="API tokens").click()
    page.wait_for_url(re.compile(r".*/ui/tokens$"))
    page.get_by_label("Name").fill("browser-made")
    page.get_by_role("button", name="Create the token").click()
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("ot_")
    page.get_by_role("button", name="Copy the token").click()  # keyboard and mouse alike
    assert httpx.get(f"{site.url}/agents", headers={"Authorization": f"Bearer {secret}"}).status_code == 200

    page.reload()  # the secret is shown once only
    assert secret not in page.content()
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke token browser-made").click()
    assert "revoked" in page.get_by_role("status").inner_text()
    answer = httpx.get(f"{site.url}/agents", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 401 and answer.json()["message"] == "This API token has been revoked"


# files and memories -------------------------------------------------------------------------------


def _api(site: Site) -> dict[str, str]:
    return {"Authorization": f"Bearer {site.world.token}"}


def _api_upload(site: Site, name: str, data: bytes) -> int:
    """A file uploaded through the API, processed (its status asked as clients ask it)."""
    answer = httpx.post(f"{site.url}/files", headers=_api(site), files={"file": (name, data)}, data={"process": "true"})
    file_id = int(answer.json()["id"])
    while httpx.get(f"{site.url}/files/{file_id}", headers=_api(site)).json()["status"] == "waiting":
        time.sleep(0.05)
    return file_id


def test_upload_a_file_with_its_progress_then_its_status(alice: Any, site: Site) -> None:
    page = alice
    page.get_by_role("link", name="Files").click()
    page.wait_for_url(re.compile(r".*/ui/files$"))
    # the upload throttled to ~200 kB/s, so that the bar is seen moving whatever the machine
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 200_000},
    )
    data = b"Our opening hours are nine to five, Monday to Friday.\n" * 8000  # 432 kB
    page.get_by_label("File", exact=True).set_input_files(
        files=[{"name": "hours.txt", "mimeType": "text/plain", "buffer": data}]
    )
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#upload-percent")).to_have_text(re.compile(r"^[1-9]\d?%$"))  # under way
    expect(page.locator("#upload-progress-label")).to_have_text("Uploaded hours.txt")
    expect(page.locator("#upload-percent")).to_have_text("100%")
    expect(page.locator("#upload-progress")).to_have_js_property("value", len(data))
    expect(page.locator("#upload-status")).to_have_text("Uploaded: hours.txt.")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})  # fmt: skip
    # the new row, its status followed from waiting to completed without a reload
    row = page.locator('tr[data-name="hours.txt"]')
    expect(row.locator("[data-status]")).to_have_text("completed")
    expect(page.locator("#files-live")).to_contain_text("hours.txt: completed")
    expect(row).to_contain_text("421.9 KiB")
    listed = httpx.get(f"{site.url}/files", headers=_api(site)).json()["data"]
    assert any(f["filename"] == "hours.txt" and f["bytes"] == len(data) for f in listed)

    # a file above the limit is refused in words
    page.get_by_label("File", exact=True).set_input_files(
        files=[{"name": "empty.txt", "mimeType": "text/plain", "buffer": b""}]
    )
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#upload-errors")).to_have_text("empty.txt: file: The file is empty.")


def test_link_a_file_to_an_agent_and_unlink_it_from_the_agent(alice: Any, site: Site) -> None:
    page = alice
    file_id = _api_upload(site, "prices.txt", b"A coffee costs two euros.")
    page.goto(f"{site.url}/ui/files")
    row = page.locator(f"#file-{file_id}")
    row.get_by_label("Agent to link prices.txt to").select_option(label="Translator")
    row.get_by_role("button", name="Link prices.txt").click()
    expect(page.get_by_role("status").first).to_have_text(re.compile(f"File {file_id} was linked"))
    linked = httpx.get(f"{site.url}/agents/{site.world.agent_id}/files", headers=_api(site)).json()["files"]
    assert [f["id"] for f in linked] == [file_id]
    page.locator(f"#file-{file_id}").get_by_role("link", name="Translator").click()
    page.wait_for_url(re.compile(rf".*/ui/agents/{site.world.agent_id}$"))
    files = page.locator("#files")
    expect(files.locator(f'tr[data-file-id="{file_id}"]')).to_contain_text("prices.txt")
    files.get_by_role("button", name="Unlink prices.txt").click()
    expect(page.locator("#files").get_by_role("status")).to_have_text(re.compile(f"File {file_id} unlinked"))
    assert httpx.get(f"{site.url}/agents/{site.world.agent_id}/files", headers=_api(site)).json()["files"] == []


def test_add_and_edit_a_memory(alice: Any, site: Site) -> None:
    page = alice
    page.get_by_role("link", name="Memories").click()
    page.wait_for_url(re.compile(r".*/ui/memories$"))
    expect(page.get_by_role("heading", name="My Memories")).to_be_visible()
    page.get_by_label("New memory").fill("My cat is called Miso.")
    page.get_by_role("button", name="Add the memory").click()
    expect(page.get_by_role("status")).to_have_text("Memory added.")
    memory = page.locator(".memory", has_text="My cat is called Miso.")
    expect(memory).to_be_visible()
    memory.get_by_text("Edit").click()  # a <summary>: keyboard and mouse alike
    memory.get_by_label(re.compile(r"Text of memory \d+")).fill("My cat is called Miso; she is grey.")
    memory.get_by_role("button", name="Save").click()
    expect(page.locator(".memory-text", has_text="she is grey")).to_be_visible()
    stored = httpx.get(f"{site.url}/memories", headers=_api(site)).json()["memories"]
    assert "My cat is called Miso; she is grey." in [m["memory"] for m in stored]


def test_the_playground_with_a_file_and_a_collection(alice: Any, site: Site, upstream: FakeUpstream) -> None:
    page = alice
    file_id = _api_upload(site, "garden.txt", b"The tomatoes are planted in May.")
    collection = httpx.post(f"{site.url}/memory-collections", headers=_api(site), json={"name": "Garden"}).json()
    collection_id = collection["collection"]["id"]
    httpx.post(f"{site.url}/memories", headers=_api(site), json={"memory": "I grow cherry tomatoes.",
                                                                 "collection_id": collection_id})  # fmt: skip
    upstream.chunks = ["Plant", " them", " in May."]
    upstream.delay = 0.0
    page.goto(f"{site.url}/ui/playground/{site.world.agent_id}")
    page.get_by_label("Answer language").fill("English")
    page.get_by_label("Model").select_option("fake-gpt")
    page.get_by_role("checkbox", name=re.compile(r"^garden\.txt")).check()
    page.get_by_role("checkbox", name="Garden", exact=True).check()
    page.get_by_label("Message").fill("When do I plant tomatoes?")
    snippet = page.locator("#snippet").inner_text()
    assert f'"file_ids":[{file_id}]' in snippet and f'"memory_collections":[{collection_id}]' in snippet
    page.get_by_label("Message").press("Enter")
    meta = page.locator(".bubble.assistant .meta").first
    expect(meta).to_contain_text("used 1 file, 1 memory")
    system = next(m["content"] for m in upstream.last["messages"] if m["role"] == "system")
    assert "The tomatoes are planted in May." in system and "I grow cherry tomatoes." in system

    meta.get_by_role("link").click()
    page.wait_for_url(re.compile(r".*/ui/executions/\d+$"))
    expect(page.locator("[data-knowledge]")).to_contain_text("garden.txt")
    expect(page.locator("[data-memories]")).to_contain_text("I grow cherry tomatoes.")
    expect(page.locator("#used")).to_contain_text(f"Garden ({collection_id})")


def test_another_workspaces_user_sees_none_of_the_files_or_memories(bob: Any, site: Site) -> None:
    page = bob
    _api_upload(site, "alice-plans.txt", b"Alice's plans.")
    httpx.post(f"{site.url}/memories", headers=_api(site), json={"memory": "Alice's private note."})
    page.goto(f"{site.url}/ui/files")
    assert "alice-plans.txt" not in page.locator("main").inner_text()
    page.goto(f"{site.url}/ui/memories")
    assert "Alice's private note." not in page.locator("main").inner_text()
    page.goto(f"{site.url}/ui/playground/{site.world.other_agent_id}")
    assert "alice-plans.txt" not in page.locator("main").inner_text()


ATTACK = """<!doctype html><html><body>
<form id="f" method="post" action="{url}/ui/tokens"><input name="name" value="planted-by-another-site"></form>
<script>document.getElementById("f").submit();</script>
</body></html>"""


def test_a_cross_site_request_without_the_token_is_refused(alice: Any, site: Site) -> None:
    """A page of another origin (another port of this host: the same site, so the browser
    sends the session cookie) posts a form to the console: the missing token refuses it."""
    page = alice
    body = ATTACK.format(url=site.url).encode()

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with page.expect_response(f"{site.url}/ui/tokens") as posted:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        assert posted.value.status == 403
        assert "did not carry the console's security token" in page.locator("main").inner_text()
    finally:
        server.shutdown()
    page.goto(f"{site.url}/ui/tokens")
    assert "planted-by-another-site" not in page.content()


def test_a_user_of_another_workspace_sees_none_of_it(bob: Any, site: Site) -> None:
    page = bob
    world = site.world
    agents = page.locator("main").inner_text()
    assert "Foreign" in agents and "Translator" not in agents and "Greeter" not in agents
    page.get_by_role("link", name="Executions").click()
    page.wait_for_url(re.compile(r".*/ui/executions$"))
    assert "Hello" not in page.locator("main").inner_text()
    for path in (f"/ui/agents/{world.agent_id}", f"/ui/playground/{world.agent_id}", "/ui/executions/1"):
        answer = page.goto(f"{site.url}{path}")
        assert answer is not None and answer.status == 404, path
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.goto(f"{site.url}/ui/usage")
    expect(page.locator('[data-total="executions"]')).to_have_text("0")
    page.goto(f"{site.url}/ui/tokens")
    assert "browser-made" not in page.content() and "tests" not in page.locator("tbody").inner_text()


def test_pages_work_at_phone_width_with_labelled_controls(
    browser: Any, site: Site, request: pytest.FixtureRequest
) -> None:
    """At 390 px no page scrolls sideways (wide tables scroll in their own box), and every
    form control has a name a screen reader can say."""
    for page in _page(request, browser, site, ALICE, viewport={"width": 390, "height": 844}):
        world = site.world
        for path in (
            "/ui/agents",
            f"/ui/agents/{world.agent_id}",
            f"/ui/playground/{world.agent_id}",
            "/ui/executions",
            "/ui/executions/1",
            "/ui/usage",
            "/ui/tokens",
            "/ui/files",
            "/ui/memories",
        ):
            page.goto(f"{site.url}{path}")
            wide = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert wide <= 0, (path, wide)
            unnamed = page.evaluate(
                """[...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
                .filter((el) => el.offsetParent !== null || el.type === 'checkbox')
                .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                                && !(el.tagName === 'BUTTON' && el.textContent.trim()))
                .map((el) => el.outerHTML.slice(0, 80))"""
            )
            assert unnamed == [], (path, unnamed)
        page.goto(f"{site.url}/ui/agents")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
