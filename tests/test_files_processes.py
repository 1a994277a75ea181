"""File processing across real `opentess serve` processes: a file left `waiting` by a process
killed mid-work completes after the next start, and two processes sharing PostgreSQL and
S3-compatible storage (moto's server) process each file exactly once — the scale-out setup,
used end to end with the OpenAI SDK."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from opentess.db.engine import make_engine
from opentess.db.models import Job
from opentess.files.tables import File, FileChunk
from opentess.settings import Settings
from tests.support import files_docs as docs
from tests.support.backends import postgres_database_or_skip
from tests.support.fake_upstream import FakeUpstream
from tests.support.files_s3 import S3Server, s3_server
from tests.support.processes import free_port, serve, write_config
from tests.support.world import make_settings, seed

PHRASE = "The vault combination is 31-07-59."


def _wait(base: str, token: str, file_id: int, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = httpx.get(f"{base}/files/{file_id}", headers={"Authorization": f"Bearer {token}"}).json()
        if body["status"] != "waiting" or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def _rows(settings: Settings, stmt: Any) -> list[Any]:
    async def go() -> list[Any]:
        engine = make_engine(settings)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(stmt)).all())
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_a_file_left_waiting_by_a_killed_process_completes_after_the_next_start(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "data", upstream.url)
    world = seed(settings)
    config = write_config(tmp_path / "c.toml", upstream.url)
    env = {"OPENTESS_FILES_JOB_LEASE_S": "1"}  # a dead process's claim expires quickly
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    long_pdf = docs.pdf([f"Page {n}: " + "inventory line " * 40 for n in range(1500)] + [PHRASE])
    first = serve(config, tmp_path / "data", port, env=env)
    try:
        uploaded = httpx.post(
            f"{base}/files",
            headers={"Authorization": f"Bearer {world.token}"},
            files={"file": ("inventory.pdf", long_pdf)},
            data={"process": "true"},
            timeout=60,
        ).json()
        assert uploaded["status"] == "waiting"
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    left = _rows(settings, select(File.status).where(File.id == uploaded["id"]))
    assert left == [("waiting",)]  # the process died with the file unfinished
    second = serve(config, tmp_path / "data", port, env=env)
    try:
        done = _wait(base, world.token, uploaded["id"])
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    assert done["status"] == "completed" and done["pages"] == 1501
    chunks = _rows(settings, select(FileChunk.text).where(FileChunk.file_id == uploaded["id"]))
    assert any(PHRASE in text for (text,) in chunks)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def test_two_processes_on_postgresql_and_s3_process_each_file_once(
    upstream: FakeUpstream, s3: S3Server, tmp_path: Path
) -> None:
    with postgres_database_or_skip() as database:
        settings = make_settings(tmp_path / "data", upstream.url, database_url=database, **s3.settings())
        world = seed(settings)
        config = write_config(tmp_path / "c.toml", upstream.url)
        env = {"OPENTESS_DATABASE_URL": database, "OPENTESS_JOBS_POLL_S": "0.1", **s3.env()}
        ports = [free_port(), free_port()]
        procs = [serve(config, tmp_path / f"data{i}", port, env=env) for i, port in enumerate(ports)]
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        headers = {"Authorization": f"Bearer {world.token}"}
        try:
            ids = []
            for n in range(12):
                content = docs.pdf([f"Document {n}.", f"{PHRASE} Copy {n}."])
                answer = httpx.post(
                    f"{bases[n % 2]}/api/files", headers=headers, files={"file": (f"doc-{n}.pdf", content)},
                    data={"process": "true"},
                )  # fmt: skip
                ids.append(answer.json()["id"])
            finished = [_wait(bases[(n + 1) % 2], world.token, file_id) for n, file_id in enumerate(ids)]
            assert {f["status"] for f in finished} == {"completed"}
            jobs = _rows(settings, select(Job.payload, Job.status, Job.attempts).where(Job.kind == "files.process"))
            assert sorted(p["file_id"] for p, _, _ in jobs) == sorted(ids)  # one job a file
            assert {(status, attempts) for _, status, attempts in jobs} == {("done", 1)}  # each ran once
            chunk_counts = _rows(
                settings,
                select(FileChunk.file_id, func.count(), func.count(func.distinct(FileChunk.ordinal)))
                .where(FileChunk.file_id.in_(ids))
                .group_by(FileChunk.file_id),
            )
            assert len(chunk_counts) == 12 and all(total == distinct == 1 for _, total, distinct in chunk_counts)
            keys = s3.object_keys()
            stored = _rows(settings, select(File.storage_key).where(File.id.in_(ids)))
            assert {key for (key,) in stored} <= set(keys)
            assert not (tmp_path / "data0" / "files" / "objects").exists()  # nothing on local disk

            # the story on the scale-out setup: linked, asked through the OpenAI SDK
            linked = httpx.post(
                f"{bases[0]}/agents/{world.agent_id}/files?waitExecution=true", headers=headers,
                json={"file_ids": [ids[3]]},
            ).json()  # fmt: skip
            assert linked["files_count"]["completed"] == 1
            client = openai.OpenAI(base_url=f"{bases[1]}/agents/{world.agent_id}/openai", api_key=world.token)
            reply = client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "What is the vault combination?"}],
                extra_body={"language": "en"},
            )
            assert reply.choices[0].message.content
            system = upstream.last["messages"][0]["content"]
            assert f"{PHRASE} Copy 3." in system and "[doc-3.pdf, " in system
            deleted = httpx.delete(f"{bases[1]}/files/{ids[0]}", headers=headers).json()
            assert deleted["id"] == ids[0] and deleted["filename"] == "doc-0.pdf"
            gone = _rows(settings, select(File.storage_key).where(File.id == ids[0]))
            assert gone == [] and len(s3.object_keys()) == len(keys) - 1
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.communicate(timeout=30)
