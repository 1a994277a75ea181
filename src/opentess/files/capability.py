"""The files capability (see opentess.capabilities): the ``files.process`` job kind, the
knowledge context source, and the service the routes use (``extras["files"]``)."""

from __future__ import annotations

from typing import Any

from opentess.capabilities import Capability
from opentess.files.knowledge import KnowledgeSource
from opentess.files.service import FilesService


def capability(state: Any) -> Capability:
    files = FilesService(state.settings, state.engine, state.models)
    files.store.wake = state.jobs.wake  # a file queued for processing wakes this process's runner
    files.start()
    return Capability(
        "files",
        job_kinds=[files.job_kind()],
        context_sources=[KnowledgeSource(files)],
        aclose=files.aclose,
        extras={"files": files},
    )
