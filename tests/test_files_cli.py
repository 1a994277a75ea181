"""`opentess files`: upload (processed by the command itself, so no server needs to run),
list and delete, with --json parsed as scripts would; stdout and stderr apart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from opentess.db.engine import make_engine
from opentess.db.models import Job
from opentess.settings import Settings
from tests.support import files_docs as docs


def test_upload_list_link_and_delete(run: Any, tmp_path: Path) -> None:
    user = json.loads(run("users", "create", "dana@example.com", "--json").stdout)
    workspace = str(user["default_workspace_id"])
    agent_file = tmp_path / "agent.yaml"
    agent_file.write_text("title: Docs\ninstructions: Answer from the files.\n")
    agent = json.loads(run("agents", "create", "--file", str(agent_file), "--workspace", workspace, "--json").stdout)
    pdf = tmp_path / "guide.pdf"
    pdf.write_bytes(docs.pdf(["Guide", "The spare key is under the blue pot."]))

    uploaded = json.loads(
        run("files", "upload", str(pdf), "--workspace", workspace, "--agent", str(agent["id"]), "--json").stdout
    )
    assert uploaded["status"] == "completed" and uploaded["processed"] is True and uploaded["type"] == "pdf"
    assert uploaded["filename"] == "guide.pdf" and uploaded["pages"] == 2

    text = run("files", "upload", str(pdf), "--workspace", workspace, "--no-process").stdout
    assert text.startswith("uploaded file ") and "'guide.pdf': completed" in text

    scan = tmp_path / "scan.pdf"
    scan.write_bytes(docs.blank_pdf(1))
    failed = run("files", "upload", str(scan), "--workspace", workspace).stdout
    assert ": failed (No text could be extracted" in failed

    listed = json.loads(run("files", "list", "--json").stdout)
    assert [f["filename"] for f in listed] == ["scan.pdf", "guide.pdf", "guide.pdf"]
    assert all(f["workspace_id"] == user["default_workspace_id"] for f in listed)
    table = run("files", "list", "--workspace", workspace).stdout.splitlines()
    assert table[0].split() == ["ID", "WORKSPACE", "STATUS", "BYTES", "TYPE", "FILENAME"]

    # the command did the work; the fallback job it left (for an interrupted command) waits,
    # and would find nothing to do
    async def fallback_jobs() -> list[tuple[str, int]]:
        engine = make_engine(Settings(data_dir=tmp_path / "data"))
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(select(Job.status, Job.attempts).where(Job.kind == "files.process"))).all()
            return [(r[0], r[1]) for r in rows]
        finally:
            await engine.dispose()

    assert asyncio.run(fallback_jobs()) == [("queued", 0), ("queued", 0)]

    deleted = run("files", "delete", str(uploaded["id"])).stdout
    assert deleted.strip() == f"deleted file {uploaded['id']} 'guide.pdf'"
    assert len(json.loads(run("files", "list", "--json").stdout)) == 2
    missing = run("files", "delete", str(uploaded["id"]), ok=False)
    assert missing.exit_code == 1 and "File not found" in missing.stderr and missing.stdout == ""


def test_upload_refuses_an_unknown_workspace_or_agent(run: Any, tmp_path: Path) -> None:
    user = json.loads(run("users", "create", "erin@example.com", "--json").stdout)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    result = run("files", "upload", str(note), "--workspace", "999", ok=False)
    assert result.exit_code == 1 and "no workspace with id 999" in result.stderr
    result = run("files", "upload", str(note), "--workspace", str(user["default_workspace_id"]), "--agent", "999",
                 ok=False)  # fmt: skip
    assert result.exit_code == 1 and "Agent not found" in result.stderr
    assert json.loads(run("files", "list", "--json").stdout) == []
