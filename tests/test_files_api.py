"""The files routes as the public Tess clients call them (notes: clients.md), byte for byte where
it matters — Langflow's components (requests), the n8n node (multipart with a typed Blob, the
signed large-file upload, ``file_ids`` on execute), the MCP servers (``purpose`` and no
``process``, ``file_id`` / ``fileId``) — and the extracted text reaching the model, on the
embedded SQLite default and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import requests

from opentess.api import files_schemas, schemas
from tests.support import files_docs as docs
from tests.support.fake_upstream import FakeUpstream
from tests.support.files_env import FilesEnv, database, files_env, system_prompt, upload, wait_processed

PHRASE = "The warehouse access code is HERON-7741."
CHAT = {"language": "en", "messages": [{"role": "user", "content": "What is the warehouse access code?"}]}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FilesEnv]:
    with (
        database(request.param) as url,
        files_env(tmp_path_factory.mktemp("files"), upstream.url, url, files_wait_s=60) as running,
    ):
        yield running


@pytest.fixture
def http(env: FilesEnv) -> Iterator[httpx.Client]:
    with env.client() as client:
        yield client


def _new_agent(http: httpx.Client, title: str = "Knowledge bot") -> int:
    spec = {
        "title": title,
        "instructions": "You answer from the files.",
        "questions": [
            {"type": "select", "name": "model", "options": ["fake-gpt"]},
            {"type": "text", "name": "language", "required": False},
        ],
    }
    created = http.post("/agents", json=spec)
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def test_langflow_upload_poll_associate_execute(env: FilesEnv, upstream: FakeUpstream) -> None:
    """Langflow's three components in a row, with `requests` as they use it: multipart with
    `process` as a form string and a file part without a Content-Type, polling while
    `waiting`, linking with ?waitExecution=True, then /execute?waitExecution=true."""
    base = f"{env.url}/api"
    auth = {"Authorization": f"Bearer {env.world.token}"}
    with httpx.Client(base_url=env.url, headers=auth) as http:
        agent_id = _new_agent(http, "Langflow knowledge")
    pdf = Path(env.world.settings.data_dir) / "langflow-report.pdf"
    pdf.write_bytes(docs.pdf(["Quarterly report", PHRASE]))
    with pdf.open("rb") as fh:
        uploaded = requests.post(f"{base}/files", headers=auth, files={"file": fh}, data={"process": "true"})
    uploaded.raise_for_status()
    file_data = uploaded.json()
    assert file_data["status"] == "waiting" and file_data["filename"] == "langflow-report.pdf"
    assert file_data["object"] == "file" and file_data["bytes"] == pdf.stat().st_size
    while file_data["status"] == "waiting":  # the component polls every 2 s
        file_data = requests.get(f"{base}/files/{file_data['id']}", headers=auth).json()
    assert file_data["status"] == "completed", file_data
    json_headers = {**auth, "Content-Type": "application/json"}
    linked = requests.post(
        f"{base}/agents/{agent_id}/files?waitExecution=True", headers=json_headers, json={"file_ids": [file_data["id"]]}
    )
    linked.raise_for_status()
    assert linked.json()["files_count"] == {"total": 1, "completed": 1, "failed": 0, "in_progress": 0}
    body = {"model": "fake-gpt", "messages": [{"role": "user", "content": "Access code?"}], "root_id": 0}
    headers = {**json_headers, "accept": "*/*"}
    executed = requests.post(f"{base}/agents/{agent_id}/execute?waitExecution=true", headers=headers, json=body)
    executed.raise_for_status()
    response = executed.json()["responses"][0]
    assert response["status"] in ("succeeded", "failed", "error")
    output = requests.get(f"{base}/agent-responses/{response['id']}", headers=headers).json()
    assert output["output"] == "Hello from the upstream."
    assert PHRASE in system_prompt(upstream.last)
    assert "[langflow-report.pdf, " in system_prompt(upstream.last)


def test_langflow_upload_without_processing_never_waits(env: FilesEnv, http: httpx.Client) -> None:
    """process=false (Langflow's default): stored, answered `completed` at once — Langflow
    polls while `waiting` for 5 minutes — and extracted when first linked."""
    stored = upload(http, "notes.txt", f"Meeting notes.\n{PHRASE}\n".encode(), process="false").json()
    assert stored["status"] == "completed" and stored["processed"] is False
    agent_id = _new_agent(http, "Lazy")
    linked = http.post(f"/api/agents/{agent_id}/files?waitExecution=True", json={"file_ids": [stored["id"]]}).json()
    assert linked["status"] == "completed" and linked["files"][0]["processed"] is True
    assert linked["files"][0]["type"] == "text"


def test_n8n_upload_wait_and_execute_with_file_ids(env: FilesEnv, upstream: FakeUpstream) -> None:
    """The n8n node: no /api prefix, x-workspace-id, a Blob with the binary's MIME type and
    `process: 'true'`, polling GET /files/{id}, then `file_ids` (numbers) and a JSON
    `waitExecution` on /execute, polling the execution until it is terminal."""
    headers = {"x-workspace-id": str(env.world.workspace_id), "Accept": "application/json"}
    with env.client(**headers) as n8n:
        content = docs.docx(["Shipping policy.", PHRASE])
        mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        uploaded = n8n.post("/files", files={"file": ("policy.docx", content, mime)}, data={"process": "true"}).json()
        assert {"id", "filename", "bytes", "status"} <= set(uploaded)
        done = wait_processed(n8n, uploaded["id"])
        assert done["status"] == "completed" and done["type"] == "docx"
        body = {"language": "en", "messages": [{"role": "user", "content": "Code?"}], "file_ids": [uploaded["id"]],
                "waitExecution": True}  # fmt: skip
        execution = n8n.post(f"/agents/{env.world.agent_id}/execute", json=body).json()["responses"][0]
        while execution["status"] not in ("succeeded", "failed", "error", "canceled", "cancelled"):
            execution = n8n.get(f"/agent-responses/{execution['id']}").json()
        assert execution["status"] == "succeeded"
        assert PHRASE in system_prompt(upstream.last)
        record = n8n.get(f"/agent-responses/{execution['id']}").json()
        assert record["knowledge"]["file_ids"] == [uploaded["id"]]
        assert record["knowledge"]["files"] == [
            {"id": uploaded["id"], "filename": "policy.docx", "used": "whole", "chunks": 0}
        ]
        listed = n8n.get("/files", params={"order": "desc", "page": 1, "per_page": 100}).json()
        assert listed["data"][0]["id"] >= uploaded["id"] and listed["last_page"] == 1
        assert n8n.post(f"/files/{uploaded['id']}/process").json()["status"] in ("waiting", "completed")
        wait_processed(n8n, uploaded["id"])


def test_n8n_signed_large_upload(env: FilesEnv, upstream: FakeUpstream) -> None:
    """n8n's path for large files: sign, PUT with exactly `required_headers` and no
    Authorization (to an absolute URL on this server), register with `process: true`."""
    content = docs.pdf(["Large manual", PHRASE])
    with env.client(**{"x-workspace-id": str(env.world.workspace_id)}) as n8n:
        signed = n8n.post(
            "/v2/files/sign", json={"filename": "manual.pdf", "content_type": "application/pdf", "size": len(content)}
        ).json()
        upload_url = signed.get("uploadUrl") or signed["upload_url"]
        object_path = signed.get("objectPath") or signed["object_path"]
        assert upload_url.startswith(env.url + "/") and signed["required_headers"] == {
            "Content-Type": "application/pdf"
        }
        put = httpx.put(upload_url, content=content, headers=signed["required_headers"])
        assert put.status_code == 200, put.text
        registered = n8n.post(
            "/v2/files/register",
            json={"object_path": object_path, "filename": "manual.pdf", "content_type": "application/pdf",
                  "process": True},
        ).json()  # fmt: skip
        assert registered["bytes"] == len(content) and registered["status"] == "waiting"
        assert wait_processed(n8n, registered["id"])["status"] == "completed"
        # registered again (a retry after a lost answer): the same file, not a second one
        again = n8n.post("/v2/files/register", json={"object_path": object_path, "filename": "x.pdf"})
        assert again.status_code == 200 and again.json()["id"] == registered["id"]
        assert again.json()["filename"] == "manual.pdf"
        assert httpx.put(upload_url, content=b"late").status_code == 404  # registered: the URL is spent
        # the OpenAI route takes file_ids at the root of the body
        chat = {**CHAT, "file_ids": [registered["id"]]}
        assert n8n.post(f"/agents/{env.world.agent_id}/openai/chat/completions", json=chat).status_code == 200
        assert PHRASE in system_prompt(upstream.last)


def test_signed_upload_refuses_more_than_signed_and_unknown_tokens(env: FilesEnv, http: httpx.Client) -> None:
    signed = http.post("/v2/files/sign", json={"filename": "a.txt", "content_type": "text/plain", "size": 5}).json()
    assert httpx.put(signed["upload_url"], content=b"0123456789").status_code == 413
    registered = http.post("/v2/files/register", json={"object_path": signed["object_path"]})
    assert registered.status_code == 422  # nothing was stored by the refused PUT
    assert httpx.put(f"{env.url}/v2/files/uploads/not-a-token", content=b"x").status_code == 404
    too_big = http.post("/v2/files/sign", json={"filename": "b", "size": env.world.settings.max_file_bytes + 1})
    assert too_big.status_code == 413
    assert http.post("/v2/files/register", json={"object_path": "../../etc/passwd"}).status_code == 422
    assert http.post("/v2/files/sign", json={"filename": "c"}).json()["errors"]["size"]


def test_mcp_clients_purpose_part_file_id_spellings_and_listing(env: FilesEnv, http: httpx.Client) -> None:
    """MCP servers upload with a `purpose` part and no `process`, link with `file_id` (a
    number, or a numeric string from the Pareto node) or `fileId`, list with page/per_page,
    unlink, and POST /files/{id}/process with a JSON content type and no body."""
    agent_id = _new_agent(http, "MCP")
    first = http.post(
        "/api/files", files={"file": ("a.md", b"# Alpha\nalpha text", "text/markdown")}, data={"purpose": "assistants"}
    ).json()
    assert first["status"] == "completed" and first["processed"] is False
    second = upload(http, "b.csv", b"name,value\nbeta,2\n", process=None).json()
    third = upload(http, "c.json", b'{"gamma": 3}', process=None).json()
    assert http.post(f"/api/agents/{agent_id}/files", json={"file_id": first["id"]}).status_code == 200
    assert http.post(f"/api/agents/{agent_id}/files", json={"fileId": second["id"]}).status_code == 200
    assert http.post(f"/api/agents/{agent_id}/files", json={"file_id": str(third["id"])}).status_code == 200
    listed = http.get(f"/api/agents/{agent_id}/files", params={"page": 1, "per_page": 15}).json()
    assert [f["id"] for f in listed["files"]] == [first["id"], second["id"], third["id"]]
    assert listed["data"] == listed["files"] and listed["id"] == agent_id
    removed = http.delete(f"/api/agents/{agent_id}/files/{second['id']}").json()
    assert removed["removed"] is True and removed["file"]["id"] == second["id"] and removed["id"] == agent_id
    assert http.delete(f"/api/agents/{agent_id}/files/{second['id']}").status_code == 404
    processed = http.post(f"/api/files/{third['id']}/process", headers={"Content-Type": "application/json"})
    assert processed.status_code == 200 and processed.json()["id"] == third["id"]
    page = http.get("/api/files", params={"page": 1, "per_page": 15}).json()
    assert page["per_page"] == 15 and all(f["object"] == "file" for f in page["data"])
    assert http.get(f"/api/files/{second['id']}").json()["filename"] == "b.csv"
    deleted = http.delete(f"/api/files/{second['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == second["id"]
    assert http.get(f"/api/files/{second['id']}").status_code == 404


def test_the_openai_sdk_gets_answers_from_a_linked_pdf(env: FilesEnv, upstream: FakeUpstream) -> None:
    """The issue's end-to-end story: a PDF uploaded with curl's multipart, linked to an agent,
    asked through the OpenAI SDK; the model receives the PDF's text, and the execution records
    which file it used."""
    with env.client() as http:
        agent_id = _new_agent(http, "SDK")
        uploaded = upload(http, "handbook.pdf", docs.pdf(["Employee handbook", PHRASE])).json()
        http.post(f"/agents/{agent_id}/files?waitExecution=true", json={"file_ids": [uploaded["id"]]})
        client = openai.OpenAI(base_url=f"{env.url}/agents/{agent_id}/openai", api_key=env.world.token)
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "What is the warehouse access code?"}]
        )
        assert reply.choices[0].message.content == "Hello from the upstream."
        assert PHRASE in system_prompt(upstream.last)
        execution_id = reply.model_extra["agent_response"]["id"]  # type: ignore[index]
        knowledge = http.get(f"/agent-responses/{execution_id}").json()["knowledge"]
        assert knowledge["files"][0]["id"] == uploaded["id"] and knowledge["retrieval"] == "whole"


def test_file_ids_carry_over_to_later_turns(env: FilesEnv, http: httpx.Client, upstream: FakeUpstream) -> None:
    """`file_ids` sent on a turn stay in the conversation: the next turn (root_id) has them
    without sending them again."""
    uploaded = upload(http, "turns.txt", f"{PHRASE}\n".encode()).json()
    wait_processed(http, uploaded["id"])
    first = http.post(
        f"/agents/{env.world.agent_id}/execute?waitExecution=true", json={**CHAT, "file_ids": [uploaded["id"]]}
    ).json()["responses"][0]
    upstream.reset()
    second = http.post(
        f"/agents/{env.world.agent_id}/execute?waitExecution=true",
        json={**CHAT, "root_id": first["id"], "messages": [{"role": "user", "content": "Again?"}]},
    ).json()["responses"][0]
    assert second["status"] == "succeeded" and PHRASE in system_prompt(upstream.last)
    recorded = http.get(f"/agent-responses/{second['id']}").json()["knowledge"]
    assert recorded["file_ids"] == [uploaded["id"]]


def test_foreign_and_unknown_file_ids_fail_before_any_model_call(
    env: FilesEnv, http: httpx.Client, upstream: FakeUpstream
) -> None:
    """Another workspace's file is a missing one: 404 on every route, a field error on
    `file_ids` (422 on /execute, 400 on the OpenAI route), and no model is called."""
    with env.client(env.world.other_token) as bob:
        foreign = upload(bob, "bob.txt", b"bob's secret").json()
    for method, path in (("GET", f"/files/{foreign['id']}"), ("DELETE", f"/files/{foreign['id']}"),
                         ("POST", f"/files/{foreign['id']}/process")):  # fmt: skip
        assert http.request(method, path).status_code == 404
    linked = http.post(f"/agents/{env.world.agent_id}/files", json={"file_ids": [foreign["id"]]})
    assert linked.status_code == 404 and linked.json()["message"] == f"File {foreign['id']} not found"
    assert http.post(f"/agents/{env.world.other_agent_id}/files", json={"file_ids": [1]}).status_code == 404
    assert http.delete(f"/agents/{env.world.agent_id}/files/{foreign['id']}").status_code == 404
    upstream.reset()
    native = http.post(f"/agents/{env.world.agent_id}/execute", json={**CHAT, "file_ids": [foreign["id"], 99999]})
    assert native.status_code == 422 and list(native.json()["errors"]) == ["file_ids"]
    assert str(foreign["id"]) in native.json()["errors"]["file_ids"][0]
    chat = http.post(
        f"/agents/{env.world.agent_id}/openai/chat/completions", json={**CHAT, "file_ids": [foreign["id"]]}
    )
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "file_ids"
    assert upstream.requests == []


def test_deleting_a_file_unlinks_it_and_keeps_the_executions(
    env: FilesEnv, http: httpx.Client, upstream: FakeUpstream
) -> None:
    agent_id = _new_agent(http, "Forgetful")
    uploaded = upload(http, "gone.txt", f"{PHRASE}\n".encode()).json()
    http.post(f"/agents/{agent_id}/files?waitExecution=1", json={"file_ids": [uploaded["id"]]})
    used = http.post(f"/agents/{agent_id}/execute?waitExecution=true", json=CHAT).json()["responses"][0]
    assert http.delete(f"/files/{uploaded['id']}").json()["filename"] == "gone.txt"
    assert http.get(f"/agents/{agent_id}/files").json()["files"] == []
    kept = http.get(f"/agent-responses/{used['id']}").json()["knowledge"]
    assert kept["files"][0]["filename"] == "gone.txt"
    upstream.reset()
    http.post(f"/agents/{agent_id}/execute?waitExecution=true", json=CHAT)
    assert PHRASE not in str(upstream.last["messages"])


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("zero.bin", b"", "The file is empty."),
        ("photo.pdf", docs.PNG, "image/png"),
        ("tool.docx", docs.ELF, "application/x-executable"),
        ("scan.pdf", docs.blank_pdf(3), "no text layer"),
        ("bomb.docx", docs.docx_bomb(), "unsafe to open"),
        ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "Legacy Microsoft Office"),
    ],
)
def test_bad_files_end_failed_or_refused(
    env: FilesEnv, http: httpx.Client, name: str, content: bytes, expected: str
) -> None:
    """Bad content is a clear 422 at upload (empty) or a `failed` file with a human reason; the
    server keeps serving."""
    answer = upload(http, name, content)
    if not content:
        assert answer.status_code == 422 and answer.json()["errors"]["file"] == [expected]
        return
    done = wait_processed(http, answer.json()["id"])
    assert done["status"] == "failed" and expected in done["error"], done
    assert http.get("/healthz").status_code == 200


def test_wrong_multipart_is_refused_and_nothing_is_stored(env: FilesEnv, http: httpx.Client) -> None:
    before = http.get("/files").json()["total"]
    as_json = http.post("/files", json={"name": "a.txt", "content": "hello"})  # the Pareto node's body
    assert as_json.status_code == 422 and "multipart/form-data" in as_json.json()["errors"]["file"][0]
    no_file = http.post("/files", data={"process": "true"}, files={"other": ("x.txt", b"x")})
    assert no_file.status_code == 422 and no_file.json()["errors"]["file"] == ["The file field is required."]
    two = http.post("/files", files=[("file", ("a.txt", b"a")), ("file", ("b.txt", b"b"))])
    assert two.status_code == 422 and two.json()["errors"]["file"] == ["Send one file a request."]
    bad_flag = upload(http, "a.txt", b"a", process="maybe")
    assert bad_flag.status_code == 422 and "process" in bad_flag.json()["errors"]
    truncated = http.post(
        "/files",
        content=b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhalf a fi',
        headers={"Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert truncated.status_code == 422
    assert http.get("/files").json()["total"] == before
    objects = Path(env.world.settings.data_dir) / "files" / "objects" / "files"
    stored = {p.name for p in objects.rglob("*") if p.is_file()}
    keys = set()
    for page in range(1, 100):
        data = http.get("/files", params={"page": page, "per_page": 100}).json()
        keys |= {f["id"] for f in data["data"]}
        if page >= data["last_page"]:
            break
    assert len(stored) == len(keys)  # one object per file: the refused uploads left none


def test_path_traversal_names_are_only_names(env: FilesEnv, http: httpx.Client) -> None:
    """A name is shown (its last component, without control or direction-override characters)
    and never used in a path: storage keys are generated."""
    for raw, shown in (("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"), ("..", "file"),
                       ("/", "file"), ("C:\\Windows\\win.ini", "win.ini")):  # fmt: skip
        uploaded = upload(http, raw, b"harmless text", process="false").json()
        assert uploaded["filename"] == shown
    # sent as raw bytes: an HTTP client would percent-encode the control character
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="re\xe2\x80\xaeport\x07.txt"\r\n\r\n'
        b"text\r\n--B--\r\n"
    )
    raw_upload = http.post("/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert raw_upload.json()["filename"] == "report.txt"
    assert not (Path(env.world.settings.data_dir).parent / "passwd").exists()


def test_answers_match_their_schemas(env: FilesEnv, http: httpx.Client) -> None:
    uploaded = upload(http, "schema.txt", b"schema text").json()
    files_schemas.FileObject.model_validate(uploaded)
    files_schemas.FileObject.model_validate(wait_processed(http, uploaded["id"]))
    from opentess.api.files import FilePage

    FilePage.model_validate(http.get("/files").json())
    agent_id = _new_agent(http, "Schemas")
    linked = http.post(f"/agents/{agent_id}/files", json={"file_ids": [uploaded["id"]]}).json()
    files_schemas.AgentFilesLinked.model_validate(linked)
    files_schemas.AgentFileList.model_validate(http.get(f"/agents/{agent_id}/files").json())
    files_schemas.AgentFileRemoved.model_validate(http.delete(f"/agents/{agent_id}/files/{uploaded['id']}").json())
    signed = http.post("/v2/files/sign", json={"filename": "s.txt", "size": 3}).json()
    files_schemas.SignedUpload.model_validate(signed)
    execution = http.post(
        f"/agents/{env.world.agent_id}/execute?waitExecution=true", json={**CHAT, "file_ids": [uploaded["id"]]}
    ).json()["responses"][0]
    schemas.Execution.model_validate(http.get(f"/agent-responses/{execution['id']}").json())
    schemas.ValidationFailed.model_validate(http.post("/files", json={}).json())


def _document(env: FilesEnv) -> dict[str, Any]:
    return dict(httpx.get(f"{env.url}/openapi.json").json())


def test_the_document_describes_the_upload_as_multipart(env: FilesEnv) -> None:
    upload_op = _document(env)["paths"]["/files"]["post"]
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
