"""The files capability's wire objects (contract §7, §8), documented by opentess.api.files_schemas."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from opentess.files.store import COMPLETED, FAILED, WAITING, FileRecord


def iso(ts: datetime) -> str:
    """``2025-01-05T22:26:27+00:00``: the File object's timestamp form (contract §7)."""
    return ts.replace(tzinfo=UTC, microsecond=0).isoformat()


def file(record: FileRecord) -> dict[str, Any]:
    """The File object: Tess's fields, ``error`` when failed, and beyond Tess the detected
    ``type`` and whether its text has been ``processed`` (a file stored with process=false is
    ``completed`` and not processed until its first use)."""
    out: dict[str, Any] = {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": iso(record.created_at),
        "filename": record.filename,
        "credits": record.credits,
        "status": record.status,
    }
    if record.status == FAILED:
        out["error"] = record.error
    elif record.error:
        out["note"] = record.error  # a completed file the limits cut short says what was left out
    out["type"] = record.kind
    out["processed"] = record.processed
    out["pages"] = record.pages
    out["chunks"] = record.chunks
    return out


def files_count(records: Sequence[FileRecord]) -> dict[str, int]:
    return {
        "total": len(records),
        "completed": sum(1 for r in records if r.status == COMPLETED),
        "failed": sum(1 for r in records if r.status == FAILED),
        "in_progress": sum(1 for r in records if r.status == WAITING),
    }


def files_status(records: Sequence[FileRecord]) -> str:
    """An agent's knowledge as a whole: waiting while any file is; failed when every file
    failed; else completed."""
    if any(r.status == WAITING for r in records):
        return WAITING
    if records and all(r.status == FAILED for r in records):
        return FAILED
    return COMPLETED


def agent_files(agent_id: int, records: Sequence[FileRecord], *, counted: bool) -> dict[str, Any]:
    """``POST /agents/{id}/files`` (``counted``: with ``files_count``) and ``GET`` (with a
    ``data`` copy of ``files`` too, for a client that reads it there)."""
    files = [file(r) for r in records]
    out: dict[str, Any] = {"id": agent_id}
    if counted:
        out["files_count"] = files_count(records)
    out["files"] = files
    out["status"] = files_status(records)
    if not counted:
        out["data"] = files
    return out


def knowledge(context: dict[str, Any] | None) -> dict[str, Any] | None:
    """What an execution's context took from files (its ``knowledge`` field), or None when
    neither the agent nor the call had any."""
    recorded = (context or {}).get("knowledge")
    if not isinstance(recorded, dict):
        return None
    return {
        "file_ids": recorded.get("file_ids", []),
        "files": recorded.get("files", []),
        "available": recorded.get("available", 0),
        "chunks": recorded.get("chunks", []),
        "skipped": recorded.get("skipped", []),
        "retrieval": recorded.get("retrieval", "none"),
        "tokens": recorded.get("tokens", 0),
        "budget": recorded.get("budget", 0),
    }
