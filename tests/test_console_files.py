"""The console's files and memories pages over HTTP, on SQLite and PostgreSQL: upload (the API's
form parser, size limit and errors), process, delete, linking to agents from both sides, memories
and their collections with the API's validation, the playground's file and collection pickers,
what an execution used — and tenant isolation exactly as the API's: another workspace's files and
another user's memories are never shown, changed or usable."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from opentess.memories.store import MAX_MEMORY_CHARS
from opentess.web.files import UPLOAD_PATH, extend_upload_limit
from tests.support.console import (
    ALICE,
    BOB,
    Site,
    add_member,
    csrf_of,
    sign_in,
    start_site,
    switch_workspace,
    wait_for_file,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.files_env import database

MAX_FILE = 200_000
MAX_BODY = 100_000  # below the file limit: the console's upload must get the upload routes' limit


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """A console of its own on each database (the pages read a few tables themselves)."""
    with database(request.param) as url:
        started = start_site(
            tmp_path_factory.mktemp("console-files"), upstream.url, database_url=url,
            max_file_bytes=MAX_FILE, max_body_bytes=MAX_BODY,
        )  # fmt: skip
        yield started
        started.server.stop()


@pytest.fixture
def alice(site: Site) -> Iterator[httpx.Client]:
    with site.client(ALICE) as client:
        yield client


@pytest.fixture
def bob(site: Site) -> Iterator[httpx.Client]:
    with site.client(BOB) as client:
        yield client


def _upload(
    client: httpx.Client, name: str, data: bytes, process: str = "true", csrf: str | None = ""
) -> httpx.Response:
    headers = {"X-CSRF-Token": csrf_of(client) if csrf == "" else csrf} if csrf is not None else {}
    return client.post(UPLOAD_PATH, files={"file": (name, data)}, data={"process": process}, headers=headers)


def _api(site: Site, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or site.world.token}"}


def _notice(answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text[:2000]
    return answer.headers["location"]


def _alert(html: str) -> str:
    found = re.search(r'<div class="error-box" role="alert"[^>]*>(.*?)</div>', html, re.S)
    assert found, html[:3000]
    return re.sub(r"<[^>]+>", " ", found.group(1)).replace("&#39;", "'").strip()


def _row(html: str, file_id: int) -> str:
    found = re.search(rf'<tr id="file-{file_id}".*?</tr>', html, re.S)
    assert found, f"no row of file {file_id}"
    return found.group(0)


# files ----------------------------------------------------------------------------------------------


def test_upload_process_and_delete_a_file(site: Site, alice: httpx.Client) -> None:
    answer = _upload(alice, "notes.txt", b"The launch is on Tuesday.\n" * 40)
    assert answer.status_code == 200, answer.text
    uploaded = answer.json()
    assert (uploaded["object"], uploaded["filename"], uploaded["status"]) == ("file", "notes.txt", "waiting")
    done = wait_for_file(alice, site.world.token, uploaded["id"])
    assert done["status"] == "completed" and done["chunks"] >= 1

    page = alice.get("/ui/files")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    row = _row(page.text, uploaded["id"])
    assert 'data-status="completed"' in row and "notes.txt" in row and "1 KiB" in row
    assert 'aria-label="Process notes.txt now"' in row and 'data-confirm="Delete notes.txt?' in row

    stored = _upload(alice, "later.txt", b"Read me when needed.", process="false").json()
    assert stored["status"] == "completed" and stored["processed"] is False
    assert "its text is read when an agent first uses it" in _row(alice.get("/ui/files").text, stored["id"])
    csrf = csrf_of(alice)
    processing = _notice(
        alice.post(f"/ui/files/{stored['id']}/process", data={"csrf_token": csrf, "next": "/ui/files"})
    )
    assert processing == f"/ui/files?notice=processing-{stored['id']}"
    assert wait_for_file(alice, site.world.token, stored["id"])["processed"] is True

    deleted = _notice(alice.post(f"/ui/files/{stored['id']}/delete", data={"csrf_token": csrf}))
    assert deleted == f"/ui/files?notice=deleted-{stored['id']}"
    assert httpx.get(f"{site.url}/files/{stored['id']}", headers=_api(site)).status_code == 404
    assert f'id="file-{stored["id"]}"' not in alice.get("/ui/files").text
    assert alice.post(f"/ui/files/{stored['id']}/delete", data={"csrf_token": csrf}).status_code == 404


def test_a_failed_file_says_why(site: Site, alice: httpx.Client) -> None:
    broken = _upload(alice, "old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600)).json()
    failed = wait_for_file(alice, site.world.token, broken["id"])
    assert failed["status"] == "failed" and "Legacy Microsoft Office" in failed["error"]
    row = _row(alice.get("/ui/files").text, broken["id"])
    assert 'data-status="failed"' in row
    assert re.search(r"data-error>([^<]+)<", row).group(1).strip() == failed["error"]  # type: ignore[union-attr]


def test_uploads_follow_the_apis_rules(site: Site, alice: httpx.Client) -> None:
    """Session and CSRF first, then exactly POST /files: its size limit (not the server's body
    limit, which is lower here), its empty-file and form errors, in its words."""
    before = httpx.get(f"{site.url}/files", headers=_api(site)).json()["total"]
    no_csrf = _upload(alice, "x.txt", b"hello", csrf=None)
    assert no_csrf.status_code == 403 and "security token" in no_csrf.json()["message"]
    wrong_csrf = _upload(alice, "x.txt", b"hello", csrf="not-the-token")
    assert wrong_csrf.status_code == 403
    with site.client() as nobody:
        assert _upload(nobody, "x.txt", b"hello", csrf="anything").status_code == 401
    assert httpx.get(f"{site.url}/files", headers=_api(site)).json()["total"] == before  # nothing stored

    empty = _upload(alice, "empty.txt", b"")
    assert empty.status_code == 422 and empty.json()["errors"] == {"file": ["The file is empty."]}
    not_a_form = alice.post(UPLOAD_PATH, content=b"hello", headers={"X-CSRF-Token": csrf_of(alice)})
    assert not_a_form.status_code == 422 and "multipart/form-data" in not_a_form.json()["errors"]["file"][0]
    bad_flag = _upload(alice, "x.txt", b"hello", process="perhaps")
    assert bad_flag.json()["errors"] == {"process": ["The process field must be true or false."]}

    above_body_limit = _upload(alice, "big.txt", b"a" * (MAX_BODY + 50_000), process="false")
    assert above_body_limit.status_code == 200, above_body_limit.text  # the upload routes' limit applies
    too_large = _upload(alice, "huge.txt", b"a" * (MAX_FILE + 1), process="false")
    assert too_large.status_code == 413
    assert too_large.json()["message"] == f"The file is larger than the limit of {MAX_FILE:,} bytes."
    page = alice.get("/ui/files").text
    assert f'data-too-large="The file is larger than the limit of {MAX_FILE:,} bytes."' in page
    assert f'data-max-bytes="{MAX_FILE}"' in page


def test_a_declared_oversized_upload_is_refused_before_its_body_is_read(site: Site, alice: httpx.Client) -> None:
    csrf = csrf_of(alice)
    cookie = "; ".join(f"{k}={v}" for k, v in alice.cookies.items())
    host, port = site.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        head = (
            f"POST {UPLOAD_PATH} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\n"
            "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 1000000000\r\n\r\n"
        )
        raw.sendall(head.encode() + b"--B\r\n")
        answer = ""
        while "}" not in answer:
            piece = raw.recv(65536).decode()
            if not piece:
                break
            answer += piece
    assert answer.startswith("HTTP/1.1 413")
    assert f"larger than the limit of {MAX_FILE + 1024 * 1024} bytes" in answer  # POST /files's own


def test_the_console_upload_asks_the_api_upload_limit() -> None:
    limits = {("POST", "/files"): 7}
    extended = extend_upload_limit(lambda method, path: limits.get((method, path)))
    assert extended("POST", UPLOAD_PATH) == 7 and extended("GET", UPLOAD_PATH) is None
    assert extended("POST", "/ui/agents/new") is None and extended("POST", "/files") == 7


def test_link_a_file_from_its_page_and_from_the_agents(site: Site, alice: httpx.Client) -> None:
    world = site.world
    file_id = _upload(alice, "faq.txt", b"Opening hours: 9 to 5.").json()["id"]
    csrf = csrf_of(alice)
    page = alice.get("/ui/files").text
    assert 'aria-label="Agent to link faq.txt to"' in _row(page, file_id)

    unchosen = alice.post(f"/ui/files/{file_id}/agents", data={"csrf_token": csrf, "agent_id": ""})
    assert unchosen.status_code == 422 and _alert(unchosen.text) == "agent_id: Choose the agent to link the file to."
    linked = _notice(
        alice.post(
            f"/ui/files/{file_id}/agents",
            data={"csrf_token": csrf, "agent_id": world.agent_id, "next": "/ui/files?page=1"},
        )
    )
    assert linked == f"/ui/files?page=1&notice=linked-{file_id}"
    api = httpx.get(f"{site.url}/agents/{world.agent_id}/files", headers=_api(site)).json()
    assert [f["id"] for f in api["files"]] == [file_id]
    row = _row(alice.get("/ui/files").text, file_id)
    assert f'href="/ui/agents/{world.agent_id}">Translator</a>' in row
    assert 'aria-label="Unlink faq.txt from Translator"' in row

    editor = alice.get(f"/ui/agents/{world.agent_id}").text
    panel = editor[editor.index('id="files"') :]
    assert "faq.txt" in panel and 'aria-label="Unlink faq.txt"' in panel
    unlinked = _notice(
        alice.post(
            f"/ui/agents/{world.agent_id}/files/{file_id}/unlink",
            data={"csrf_token": csrf, "next": f"/ui/agents/{world.agent_id}#files"},
        )
    )
    assert unlinked == f"/ui/agents/{world.agent_id}?notice=unlinked-{file_id}#files"
    assert httpx.get(f"{site.url}/agents/{world.agent_id}/files", headers=_api(site)).json()["files"] == []
    again = alice.post(f"/ui/agents/{world.agent_id}/files/{file_id}/unlink", data={"csrf_token": csrf})
    assert again.status_code == 404 and "File not linked to this agent" in again.text

    # from the agent's page: its files panel links one of the workspace's files
    editor = alice.get(f"/ui/agents/{world.agent_id}").text
    assert re.search(rf'<option value="{file_id}">faq.txt \(#{file_id}, completed\)</option>', editor)
    relinked = alice.post(f"/ui/agents/{world.agent_id}/files", data={"csrf_token": csrf, "file_id": file_id})
    assert _notice(relinked) == f"/ui/agents/{world.agent_id}?notice=linked-{file_id}"
    none = alice.post(f"/ui/agents/{world.agent_id}/files", data={"csrf_token": csrf, "file_id": ""})
    assert none.status_code == 422 and "file_id: Choose the file to link." in none.text
    assert 'id="files-errors"' in none.text  # beside the agent's files, on its page
    assert (
        alice.post(f"/ui/agents/{world.agent_id}/files/{file_id}/unlink", data={"csrf_token": csrf}).status_code == 303
    )


def test_file_forms_without_the_csrf_token_are_refused(site: Site, alice: httpx.Client) -> None:
    file_id = _upload(alice, "keep.txt", b"keep me", process="false").json()["id"]
    for path, data in (
        (f"/ui/files/{file_id}/delete", {}),
        (f"/ui/files/{file_id}/process", {}),
        (f"/ui/files/{file_id}/agents", {"agent_id": site.world.agent_id}),
        (f"/ui/agents/{site.world.agent_id}/files", {"file_id": file_id}),
    ):
        refused = alice.post(path, data=data)
        assert refused.status_code == 403 and "security token" in refused.text, path
    assert httpx.get(f"{site.url}/files/{file_id}", headers=_api(site)).json()["processed"] is False
    assert httpx.get(f"{site.url}/agents/{site.world.agent_id}/files", headers=_api(site)).json()["files"] == []


def test_another_workspaces_files_are_neither_shown_nor_usable(
    site: Site, alice: httpx.Client, bob: httpx.Client
) -> None:
    world = site.world
    secret = _upload(alice, "alice-only.txt", b"The vault code is 1234.", process="false").json()["id"]
    bobs = _upload(bob, "bob.txt", b"Bob's notes", process="false").json()["id"]
    bob_csrf = csrf_of(bob)
    assert "alice-only.txt" not in bob.get("/ui/files").text
    for path, data in (
        (f"/ui/files/{secret}/process", {}),
        (f"/ui/files/{secret}/delete", {}),
        (f"/ui/files/{secret}/agents", {"agent_id": world.other_agent_id}),  # Alice's file, Bob's agent
        (f"/ui/files/{bobs}/agents", {"agent_id": world.agent_id}),  # Bob's file, Alice's agent
        (f"/ui/agents/{world.other_agent_id}/files", {"file_id": secret}),
        (f"/ui/agents/{world.agent_id}/files/{secret}/unlink", {}),
    ):
        answer = bob.post(path, data={"csrf_token": bob_csrf, **data})
        assert answer.status_code == 404, (path, answer.status_code)
    assert httpx.get(f"{site.url}/files/{secret}", headers=_api(site)).json()["processed"] is False
    assert (
        httpx.get(f"{site.url}/agents/{world.other_agent_id}/files", headers=_api(site, world.other_token)).json()[
            "files"
        ]
        == []
    )
    playground = bob.get(f"/ui/playground/{world.other_agent_id}").text
    assert "bob.txt" in playground and "alice-only.txt" not in playground
    run = bob.post(
        f"/ui/api/agents/{world.other_agent_id}/execute",
        json={"stream": True, "language": "en", "model": "fake-gpt", "file_ids": [secret],
              "messages": [{"role": "user", "content": "What is the code?"}]},
        headers={"X-CSRF-Token": bob_csrf},
    )  # fmt: skip
    assert run.status_code == 422
    assert run.json()["errors"]["file_ids"] == [
        f"The selected file_ids is invalid: no file {secret} in this workspace."
    ]
    # Alice's own second workspace holds none of the first one's files either
    with site.client(ALICE) as other:
        switch_workspace(other, world.second_workspace_id)
        assert "alice-only.txt" not in other.get("/ui/files").text


# memories -------------------------------------------------------------------------------------------


def _memory_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-memory-id="(\d+)"', html)]


def test_collections_and_memories(site: Site, alice: httpx.Client) -> None:
    csrf = csrf_of(alice)
    page = alice.get("/ui/memories").text
    assert re.search(r'<h2 id="collection-title">My Memories <span class="badge">default</span>', page)
    assert "so it cannot be deleted" in page and "Delete the collection</button>" not in page
    default_id = int(re.findall(r'"memory_collections": \[(\d+)\]', page.replace("&#34;", '"'))[0])

    made = _notice(alice.post("/ui/memories/collections", data={"csrf_token": csrf, "name": "  Travel  "}))
    travel = int(re.findall(r"collection=(\d+)", made)[0])
    taken = alice.post("/ui/memories/collections", data={"csrf_token": csrf, "name": "Travel"})
    assert taken.status_code == 422
    assert re.search(r'id="new-collection-error">\s*The name has already been taken.', taken.text)
    blank = alice.post("/ui/memories/collections", data={"csrf_token": csrf, "name": " "})
    assert re.search(r'id="new-collection-error">\s*The name field is required.', blank.text)
    long_name = alice.post("/ui/memories/collections", data={"csrf_token": csrf, "name": "n" * 101})
    assert "The name field must not be greater than 100 characters." in long_name.text

    renamed = alice.post(f"/ui/memories/collections/{travel}/rename", data={"csrf_token": csrf, "name": "Trips"})
    assert _notice(renamed) == f"/ui/memories?collection={travel}&notice=collection-renamed"
    added = alice.post(
        f"/ui/memories/collections/{travel}/memories", data={"csrf_token": csrf, "memory": "Window seat,\r\nplease."}
    )
    assert _notice(added) == f"/ui/memories?collection={travel}&notice=memory-added"
    api = httpx.get(f"{site.url}/memories", params={"collection_id": travel}, headers=_api(site)).json()
    assert [m["memory"] for m in api["memories"]] == ["Window seat,\nplease."]  # as a JSON client sends it
    memory_id = api["memories"][0]["id"]

    too_long = "x" * (MAX_MEMORY_CHARS + 1)
    refused = alice.post(f"/ui/memories/collections/{travel}/memories", data={"csrf_token": csrf, "memory": too_long})
    assert refused.status_code == 422
    assert re.search(
        r'id="new-memory-error">\s*The memory field must not be greater than 32000 characters.', refused.text
    )
    assert too_long in refused.text  # what was typed stays
    empty = alice.post(f"/ui/memories/collections/{travel}/memories", data={"csrf_token": csrf, "memory": "  "})
    assert "The memory field is required." in empty.text

    # edit: the text, then a move to the default collection
    edited = alice.post(
        f"/ui/memories/{memory_id}", data={"csrf_token": csrf, "memory": "Aisle seat.", "collection_id": travel}
    )
    assert _notice(edited).endswith(f"collection={travel}&notice=memory-saved-{memory_id}")
    bad_edit = alice.post(f"/ui/memories/{memory_id}", data={"csrf_token": csrf, "memory": "", "collection_id": travel})
    assert bad_edit.status_code == 422
    assert re.search(rf'id="memory-{memory_id}-text-error">\s*The memory field is required.', bad_edit.text)
    moved = alice.post(
        f"/ui/memories/{memory_id}", data={"csrf_token": csrf, "memory": "Aisle seat.", "collection_id": default_id}
    )
    assert _notice(moved) == f"/ui/memories?collection={default_id}&notice=memory-moved-{memory_id}"
    assert memory_id in _memory_ids(alice.get("/ui/memories").text)
    unknown = alice.post(
        f"/ui/memories/{memory_id}", data={"csrf_token": csrf, "memory": "x", "collection_id": "999999"}
    )
    assert unknown.status_code == 422 and "The selected collection_id is invalid." in unknown.text

    # the default collection cannot be deleted; another one goes with its memories
    kept = alice.post(f"/ui/memories/collections/{default_id}/delete", data={"csrf_token": csrf})
    assert kept.status_code == 403 and _alert(kept.text) == "Default collection cannot be deleted"
    alice.post(f"/ui/memories/collections/{travel}/memories", data={"csrf_token": csrf, "memory": "Bye"})
    gone = alice.post(f"/ui/memories/collections/{travel}/delete", data={"csrf_token": csrf})
    assert _notice(gone) == "/ui/memories?notice=collection-deleted"
    assert httpx.get(f"{site.url}/memory-collections/{travel}", headers=_api(site)).status_code == 404
    assert alice.get(f"/ui/memories?collection={travel}").status_code == 404

    deleted = alice.post(f"/ui/memories/{memory_id}/delete", data={"csrf_token": csrf})
    assert _notice(deleted).endswith(f"notice=memory-deleted-{memory_id}")
    assert httpx.get(f"{site.url}/memories/{memory_id}", headers=_api(site)).status_code == 404


def test_memories_page_through_newest_first(site: Site, alice: httpx.Client) -> None:
    csrf = csrf_of(alice)
    made = _notice(alice.post("/ui/memories/collections", data={"csrf_token": csrf, "name": "Many"}))
    many = int(re.findall(r"collection=(\d+)", made)[0])
    for n in range(23):
        alice.post(f"/ui/memories/collections/{many}/memories", data={"csrf_token": csrf, "memory": f"fact {n}"})
    first = alice.get("/ui/memories", params={"collection": many}).text
    assert len(_memory_ids(first)) == 20 and "Page 1 of 2" in first and "fact 22" in first
    second = alice.get("/ui/memories", params={"collection": many, "page": 2}).text
    assert len(_memory_ids(second)) == 3 and "fact 0" in second and "fact 22" not in second
    assert re.search(rf'<a href="/ui/memories\?collection={many}"[^>]*>Many</a>\s*<span class="muted small">23<', first)


def test_pages_past_the_last_and_beyond_any_database_show_the_last(site: Site, alice: httpx.Client) -> None:
    """A page number past the last (its last item just deleted) shows the last page with its
    pager; one too large for an offset is page 1 — never an empty page, never a 500."""
    csrf = csrf_of(alice)
    made = _notice(alice.post("/ui/memories/collections", data={"csrf_token": csrf, "name": "Pages"}))
    pages = int(re.findall(r"collection=(\d+)", made)[0])
    for n in range(21):
        alice.post(f"/ui/memories/collections/{pages}/memories", data={"csrf_token": csrf, "memory": f"item {n}"})
    last = alice.get("/ui/memories", params={"collection": pages, "page": 2}).text
    only = _memory_ids(last)
    assert len(only) == 1 and "Page 2 of 2" in last
    deleted = alice.post(f"/ui/memories/{only[0]}/delete", data={"csrf_token": csrf, "page": "2"})
    back = alice.get(_notice(deleted)).text
    assert len(_memory_ids(back)) == 20 and only[0] not in _memory_ids(back) and "item 20" in back
    assert len(_memory_ids(alice.get("/ui/memories", params={"collection": pages, "page": 7}).text)) == 20
    huge = str(2**62)
    for path in ("/ui/memories", "/ui/files", "/ui/agents", "/ui/executions"):
        params = {"page": huge, **({"collection": str(pages)} if path == "/ui/memories" else {})}
        answer = alice.get(path, params=params)
        assert answer.status_code == 200, (path, answer.text[:500])
    kept = _memory_ids(back)[0]
    edited = alice.post(
        f"/ui/memories/{kept}", data={"csrf_token": csrf, "memory": "edited", "collection_id": pages, "page": huge}
    )
    assert _notice(edited).endswith(f"collection={pages}&notice=memory-saved-{kept}")


def test_a_memory_of_a_collection_beyond_the_listed_ones_stays_there(
    site: Site, alice: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edit form's collection select lists the first collections only; the memory's own is
    always among its options, so saving the text alone never moves it. (The site runs in this
    process: the listed count is lowered to 1 rather than making 100 collections.)"""
    from opentess.web import memories as web_memories

    csrf = csrf_of(alice)
    made = _notice(alice.post("/ui/memories/collections", data={"csrf_token": csrf, "name": "Far away"}))
    far = int(re.findall(r"collection=(\d+)", made)[0])
    alice.post(f"/ui/memories/collections/{far}/memories", data={"csrf_token": csrf, "memory": "Stay here."})
    monkeypatch.setattr(web_memories, "COLLECTIONS", 1)  # only the default collection is listed
    page = alice.get("/ui/memories", params={"collection": far}).text
    memory_id = _memory_ids(page)[0]
    select = page[page.index(f'id="memory-{memory_id}-collection"') :]
    select = select[: select.index("</select>")]
    assert re.search(rf'<option value="{far}" selected>Far away</option>', select), select


def test_memory_forms_without_the_csrf_token_are_refused(alice: httpx.Client) -> None:
    page = alice.get("/ui/memories").text
    default_id = int(re.findall(r"/ui/memories/collections/(\d+)/memories", page)[0])
    for path in ("/ui/memories/collections", f"/ui/memories/collections/{default_id}/memories",
                 f"/ui/memories/collections/{default_id}/rename"):  # fmt: skip
        refused = alice.post(path, data={"name": "planted", "memory": "planted"})
        assert refused.status_code == 403, path
    assert "planted" not in alice.get("/ui/memories").text


def test_another_users_memories_are_never_shown_nor_changed(site: Site, alice: httpx.Client, bob: httpx.Client) -> None:
    csrf = csrf_of(alice)
    made = _notice(alice.post("/ui/memories/collections", data={"csrf_token": csrf, "name": "Alice's secrets"}))
    secret_collection = int(re.findall(r"collection=(\d+)", made)[0])
    alice.post(
        f"/ui/memories/collections/{secret_collection}/memories",
        data={"csrf_token": csrf, "memory": "Alice hides a key"},
    )
    memory_id = httpx.get(
        f"{site.url}/memories", params={"collection_id": secret_collection}, headers=_api(site)
    ).json()["memories"][0]["id"]

    page = bob.get("/ui/memories").text
    assert "Alice hides a key" not in page and "Alice&#39;s secrets" not in page
    assert bob.get("/ui/memories", params={"collection": secret_collection}).status_code == 404
    bob_csrf = csrf_of(bob)
    for path, data in (
        (f"/ui/memories/{memory_id}", {"memory": "owned by Bob"}),
        (f"/ui/memories/{memory_id}/delete", {}),
        (f"/ui/memories/collections/{secret_collection}/rename", {"name": "Bob's"}),
        (f"/ui/memories/collections/{secret_collection}/delete", {}),
        (f"/ui/memories/collections/{secret_collection}/memories", {"memory": "planted"}),
    ):
        assert bob.post(path, data={"csrf_token": bob_csrf, **data}).status_code == 404, path
    bob_default = int(re.findall(r"/ui/memories/collections/(\d+)/memories", page)[0])
    moved = bob.post(
        f"/ui/memories/{memory_id}", data={"csrf_token": bob_csrf, "memory": "x", "collection_id": bob_default}
    )
    assert moved.status_code == 404
    assert (
        httpx.get(f"{site.url}/memories/{memory_id}", headers=_api(site)).json()["memory"]["memory"]
        == "Alice hides a key"
    )
    assert "Alice&#39;s secrets" not in bob.get(f"/ui/playground/{site.world.other_agent_id}").text
    # memories are the user's, not the workspace's: Alice has them in her other workspace too
    with site.client(ALICE) as other:
        switch_workspace(other, site.world.second_workspace_id)
        assert "Alice hides a key" in other.get("/ui/memories", params={"collection": secret_collection}).text


# the playground and what an execution used ---------------------------------------------------------


def _events(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return [orjson.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]


def test_a_run_with_a_file_and_a_collection_shows_what_it_used(
    site: Site, alice: httpx.Client, upstream: FakeUpstream
) -> None:
    world = site.world
    csrf = csrf_of(alice)
    file_id = _upload(alice, "menu.txt", b"Soup of the day: pumpkin.").json()["id"]
    wait_for_file(alice, world.token, file_id)
    made = _notice(alice.post("/ui/memories/collections", data={"csrf_token": csrf, "name": "Food"}))
    food = int(re.findall(r"collection=(\d+)", made)[0])
    alice.post(f"/ui/memories/collections/{food}/memories", data={"csrf_token": csrf, "memory": "I am vegetarian."})

    playground = alice.get(f"/ui/playground/{world.agent_id}").text
    assert 'data-field="file_ids" data-type="ids"' in playground
    assert re.search(rf'<input type="checkbox" value="{file_id}"> menu.txt', playground)
    assert re.search(rf'<input type="checkbox" value="{food}"> Food', playground)
    assert 'id="field-tools"' in playground  # the agent offers toolsets: its select

    upstream.chunks = ["Pumpkin soup", " it is."]
    upstream.delay = 0.0
    events = _events(
        alice.post(
            f"/ui/api/agents/{world.agent_id}/execute",
            json={"stream": True, "language": "English", "model": "fake-gpt", "file_ids": [file_id],
                  "memory_collections": [food], "messages": [{"role": "user", "content": "What soup?"}]},
            headers={"X-CSRF-Token": csrf},
        )
    )  # fmt: skip
    execution_id = events[0]["id"]
    assert events[-1]["status"] == "completed"
    system = next(m["content"] for m in upstream.last["messages"] if m["role"] == "system")
    assert "Soup of the day: pumpkin." in system and "I am vegetarian." in system

    detail = alice.get(f"/ui/executions/{execution_id}").text
    knowledge = detail[detail.index('id="knowledge-title"') : detail.index('id="memories-title"')]
    assert "<strong>menu.txt</strong>" in knowledge and "the whole file" in knowledge
    assert f"(<code>file_ids</code>): {file_id}" in knowledge
    memories = detail[detail.index('id="memories-title"') : detail.index('id="sources-title"')]
    assert "Food (" in memories and "I am vegetarian." in memories and "1 of 1 used" in memories
    assert "None: the run used no toolset." in detail
    assert "I am vegetarian." in detail[: detail.index('id="used-title"')]  # in the instructions, for its runner
    shown = alice.get(f"/ui/api/executions/{execution_id}").json()
    assert shown["knowledge"]["files"][0]["filename"] == "menu.txt" and shown["memories"]["collections"] == [food]

    # another member of the workspace reads the run, but never its runner's memories
    add_member(world.settings, "carol@example.com", world.workspace_id)
    with site.client() as carol:
        assert sign_in(carol, "carol@example.com").status_code == 303
        switch_workspace(carol, world.workspace_id)
        seen = carol.get(f"/ui/executions/{execution_id}").text
        assert "<strong>menu.txt</strong>" in seen  # the workspace's file
        assert "I am vegetarian." not in seen and "Food (" not in seen
        assert "another user's: its text is theirs" in seen
        # nor in the instructions the model was sent, where its place is said
        assert "## Memories\n(the memories of the user who ran this execution: theirs only, not shown)" in seen
        assert "Soup of the day: pumpkin." in seen


def test_sources_and_steps_are_listed_and_only_web_links_are_links(site: Site, alice: httpx.Client) -> None:
    """A toolset's numbered sources (title linked to its URL, snippet) and steps (tool, arguments,
    time, result size, error), read from the stored execution."""
    import asyncio

    from sqlalchemy import update

    from opentess.db.engine import make_engine
    from opentess.db.models import Execution

    events = _events(
        alice.post(
            f"/ui/api/agents/{site.world.agent_id}/execute",
            json={"stream": True, "language": "English", "model": "fake-gpt",
                  "messages": [{"role": "user", "content": "Search"}]},
            headers={"X-CSRF-Token": csrf_of(alice)},
        )
    )  # fmt: skip
    execution_id = events[0]["id"]
    sources = [
        {
            "index": 1,
            "title": "Pumpkin – Wikipedia",
            "url": "https://en.wikipedia.org/wiki/Pumpkin",
            "snippet": "A cultivar.",
        },
        {"index": 2, "title": "Trick", "url": "javascript:alert(1)", "snippet": "not a link"},
        {"index": 3, "title": "Broken", "url": "http://[x/", "snippet": "does not even split"},
    ]
    steps = [
        {"index": 1, "tool": "wikipedia_search", "arguments": {"query": "pumpkin"}, "duration_ms": 812.4,
         "result_chars": 4512, "error": None},
        {"index": 2, "tool": "read_url", "arguments": {"url": "https://example.org"}, "duration_ms": 20.0,
         "result_chars": 0, "error": "the page answered 404"},
    ]  # fmt: skip

    async def store() -> None:
        engine = make_engine(site.world.settings)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    update(Execution).where(Execution.id == execution_id).values(sources=sources, steps=steps)
                )
        finally:
            await engine.dispose()

    asyncio.run(store())
    detail = alice.get(f"/ui/executions/{execution_id}").text
    listed = detail[detail.index('id="sources-title"') : detail.index('id="steps-title"')]
    assert '<li value="1"><a href="https://en.wikipedia.org/wiki/Pumpkin" rel="noopener noreferrer nofollow"' in listed
    assert '<span class="snippet">A cultivar.</span>' in listed
    assert 'href="javascript' not in detail and '<li value="2">Trick' in listed
    assert '<li value="3">Broken' in listed and 'href="http://[x/' not in detail
    table = detail[detail.index('id="steps-title"') :]
    assert "<code>wikipedia_search</code>" in table and "812 ms" in table and "4,512 characters" in table
    assert '{"query": "pumpkin"}' in table and "the page answered 404" in table
