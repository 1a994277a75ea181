"""Limits and credits: a body above OPENTESS_MAX_FILE_BYTES refused from its Content-Length
before it is read (and a chunked one as soon as it passes), per-workspace file count and
bytes, files per agent, and credits per processed MB and page — with nothing half-stored."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support import files_docs as docs
from tests.support.fake_upstream import FakeUpstream
from tests.support.files_env import FilesEnv, database, files_env, upload, wait_processed

MAX_FILE = 200_000


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FilesEnv]:
    overrides = {
        "max_file_bytes": MAX_FILE, "files_workspace_max_files": 3, "files_workspace_max_bytes": 250_000,
        "files_agent_max_files": 2, "files_credits_per_mb": 2.0, "files_credits_per_page": 0.5,
    }  # fmt: skip
    with (
        database(request.param) as url,
        files_env(tmp_path_factory.mktemp("limits"), upstream.url, url, **overrides) as running,
    ):
        yield running


def _objects(env: FilesEnv) -> int:
    root = Path(env.world.settings.data_dir) / "files" / "objects"
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def test_an_oversized_upload_is_refused_before_its_body_is_read(env: FilesEnv) -> None:
    """The 413 comes back while the client has sent only the head and a few bytes of a
    declared 1 GB body."""
    host, port = env.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        head = (
            f"POST /files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {env.world.token}\r\n"
            "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 1000000000\r\n\r\n"
        )
        raw.sendall(head.encode() + b"--B\r\n")
        answer = ""
        while "}" not in answer:  # the head and the JSON body may come in two reads
            piece = raw.recv(65536).decode()
            if not piece:
                break
            answer += piece
    assert answer.startswith("HTTP/1.1 413")
    assert f"larger than the limit of {MAX_FILE + 1024 * 1024} bytes" in answer


def test_a_chunked_upload_is_stopped_when_it_passes_the_limit(env: FilesEnv) -> None:
    before = _objects(env)

    def body() -> Iterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        for _ in range(40):
            yield b"x" * 10_000
        yield b"\r\n--B--\r\n"

    with env.client() as http:
        answer = http.post("/files", content=body(), headers={"Content-Type": "multipart/form-data; boundary=B"})
        assert answer.status_code == 413 and answer.json()["error"] == "Payload too large"
        assert "limit of 200,000 bytes" in answer.json()["message"]
        assert http.get("/files").json()["total"] == 0
    assert _objects(env) == before


def test_workspace_limits_on_count_and_bytes(env: FilesEnv) -> None:
    with env.client(env.world.other_token) as bob:  # a workspace of its own
        for n in range(3):
            assert upload(bob, f"{n}.txt", b"small", process="false").status_code == 200
        fourth = upload(bob, "3.txt", b"small", process="false")
        assert fourth.status_code == 422 and "limit of 3 files" in fourth.json()["errors"]["file"][0]
        bob.delete(f"/files/{bob.get('/files').json()['data'][0]['id']}")
        assert upload(bob, "3.txt", b"small", process="false").status_code == 200
    team = {"x-workspace-id": str(env.world.second_workspace_id)}
    with env.client(**team) as http:
        assert upload(http, "a.bin", b"a" * 150_000, process="false").status_code == 200
        second = upload(http, "b.bin", b"b" * 150_000, process="false")
        assert second.status_code == 413 and "limit is 250,000 bytes" in second.json()["message"]
        signed = http.post("/v2/files/sign", json={"filename": "c.bin", "size": 150_000})
        assert signed.status_code == 413
        assert http.get("/files").json()["total"] == 1


def test_an_agent_holds_a_limited_number_of_files(env: FilesEnv) -> None:
    with env.client() as http:
        agent = http.post("/agents", json={"title": "Small", "instructions": "Hi"}).json()["id"]
        ids = [upload(http, f"{n}.txt", b"x", process="false").json()["id"] for n in range(3)]
        assert http.post(f"/agents/{agent}/files", json={"file_ids": ids[:2]}).status_code == 200
        third = http.post(f"/agents/{agent}/files", json={"file_ids": ids[2:]})
        assert third.status_code == 422 and "at most 2 files" in third.json()["errors"]["file_ids"][0]
        assert http.post(f"/agents/{agent}/files", json={"file_ids": ids[:1]}).status_code == 200  # already there
        for file_id in ids:
            http.delete(f"/files/{file_id}")


def test_credits_are_charged_per_processed_mb_and_page(env: FilesEnv) -> None:
    content = docs.pdf(["First page", "Second page", "Third page"])
    with env.client() as http:
        stored = upload(http, "three.pdf", content, process="false").json()
        assert stored["credits"] == 0  # storing is free; processing is what is charged
        http.post(f"/files/{stored['id']}/process")
        done = wait_processed(http, stored["id"])
        expected = len(content) / (1024 * 1024) * 2.0 + 3 * 0.5
        assert done["pages"] == 3 and done["credits"] == pytest.approx(expected, rel=1e-4)
        http.delete(f"/files/{stored['id']}")


def test_the_files_routes_need_a_token(env: FilesEnv) -> None:
    for method, path in (("GET", "/files"), ("POST", "/files"), ("GET", "/files/1"), ("POST", "/v2/files/sign"),
                         ("POST", "/agents/1/files"), ("GET", "/api/agents/1/files")):  # fmt: skip
        assert httpx.request(method, env.url + path).status_code == 401


def test_concurrent_uploads_to_one_workspace_hold_its_limit(env: FilesEnv) -> None:
    """Uploads racing for the last places: exactly the limit's worth are stored, the others are
    refused with 422 — never a 500 (on PostgreSQL, two uploads each holding the workspace row's
    foreign-key lock while asking for its update lock deadlocked)."""
    with env.client() as http:
        free = 3 - http.get("/files").json()["total"]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: upload(http, f"race-{n}.txt", b"racing", process="true"), range(8)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * free + [422] * (8 - free), [a.text for a in answers]
        stored = [a.json()["id"] for a in answers if a.status_code == 200]
        for file_id in stored:
            assert wait_processed(http, file_id)["status"] == "completed"
            http.delete(f"/files/{file_id}")
