"""`opentess files`: upload, list and delete files.

``upload`` processes the file itself, in the command, so that it is ``completed`` (or
``failed``, with the reason) when the command returns — no server has to run. Its processing
job is enqueued too, delayed past the extraction time limit: if the command is interrupted, a
server finishes the work; if the command finished it, the job finds nothing to do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click

from opentess.api import files_wire
from opentess.cli.common import domain_errors, emit, json_option, run_with_store, settings_from, table
from opentess.clock import utcnow
from opentess.files.service import FilesService
from opentess.files.store import PROCESS_JOB
from opentess.jobs import Job, JobContext
from opentess.settings import Settings
from opentess.store import Store

COLUMNS = [("id", "ID"), ("status", "STATUS"), ("bytes", "BYTES"), ("type", "TYPE"), ("filename", "FILENAME")]
READ_PIECE = 1024 * 1024


async def _pieces(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while piece := fh.read(READ_PIECE):
            yield piece


@click.group()
def files() -> None:
    """Manage files (agents' knowledge)."""


@files.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workspace", "workspace_id", required=True, type=int, help="Workspace id.")
@click.option("--agent", "agent_id", type=int, help="Also link the file to this agent of the workspace.")
@click.option("--no-process", is_flag=True, help="Only store it (extracted on first use).")
@json_option
@click.pass_context
@domain_errors
def files_upload(
    ctx: click.Context, path: Path, workspace_id: int, agent_id: int | None, no_process: bool, as_json: bool
) -> None:
    """Upload a file, process it here (unless --no-process) and optionally link it to an agent."""

    async def go(store: Store, settings: Settings) -> dict[str, Any]:
        await store.users.workspace(workspace_id)
        if agent_id is not None:
            await store.agents.get(agent_id, workspace_id)
        service = FilesService(settings, store.engine)
        try:
            record = await service.add(
                workspace_id=workspace_id,
                user_id=None,
                filename=path.name,
                pieces=_pieces(path),
                process=not no_process,
                job_delay_s=settings.files_extract_timeout_s + 60,
            )
            if not no_process:
                payload = {"file_id": record.id, "key": record.storage_key, "generation": record.generation}
                job = Job(0, PROCESS_JOB, payload, 1, 1, utcnow())
                await service.processor.handle(job, JobContext(None))
                record = await service.store.get(record.id, workspace_id)
            if agent_id is not None:
                await service.link(agent_id, workspace_id, [record.id])
                if no_process:  # linking extracts it: a server does, once one runs
                    record = await service.store.get(record.id, workspace_id)
            return files_wire.file(record)
        finally:
            await service.aclose()

    def text(d: dict[str, Any]) -> str:
        line = f"uploaded file {d['id']} {d['filename']!r}: {d['status']}"
        if d.get("error"):
            line += f" ({d['error']})"
        return line + (f", linked to agent {agent_id}" if agent_id is not None else "")

    emit(run_with_store(go, settings_from(ctx)), as_json, text)


@files.command("list")
@click.option("--workspace", "workspace_id", type=int, help="Only this workspace's files.")
@json_option
@click.pass_context
@domain_errors
def files_list(ctx: click.Context, workspace_id: int | None, as_json: bool) -> None:
    """List files, newest first."""

    async def go(store: Store, settings: Settings) -> list[dict[str, Any]]:
        service = FilesService(settings, store.engine)
        try:
            records, _ = await service.store.search(workspace_id, descending=True, offset=0, limit=10_000)
            return [{**files_wire.file(r), "workspace_id": r.workspace_id} for r in records]
        finally:
            await service.aclose()

    columns = [*COLUMNS[:1], ("workspace_id", "WORKSPACE"), *COLUMNS[1:]]
    emit(run_with_store(go, settings_from(ctx)), as_json, lambda rows: table(rows, columns, "no files"))


@files.command("delete")
@click.argument("file_id", type=int)
@json_option
@click.pass_context
@domain_errors
def files_delete(ctx: click.Context, file_id: int, as_json: bool) -> None:
    """Delete a file: unlinked from its agents, its text and bytes removed."""

    async def go(store: Store, settings: Settings) -> dict[str, Any]:
        service = FilesService(settings, store.engine)
        try:
            return files_wire.file(await service.delete(file_id, None))
        finally:
            await service.aclose()

    emit(run_with_store(go, settings_from(ctx)), as_json, lambda d: f"deleted file {d['id']} {d['filename']!r}")
