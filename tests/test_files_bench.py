"""The files benchmark (scripts/bench --files) runs end to end with tiny sizes, so it cannot rot.
It asserts that every scenario produced its rows — never how fast anything was."""

from __future__ import annotations

import argparse

from bench import files


def test_the_files_benchmark_runs() -> None:
    report = files.report(argparse.Namespace(quick=True, database_url=None, repeat=1, duration=1.0))
    for heading in (
        "#### Ingestion: 4 documents",
        "#### Retrieval: the knowledge step",
        "#### The OpenAI route",
        "#### Upload memory: one 20 MB file",
    ):
        assert heading in report
    assert "| SQLite | 1,000 | memory |" in report and "| SQLite | 1,000 | database |" in report
    assert "| local data directory |" in report
    assert "| SQLite | opentess: upload, store, queue, extract" in report
    assert "Files that did not complete: 0." in report
