"""scripts/bench --files: the files capability's scenarios, each against a baseline measured in the
same run.

- ingestion: documents per second through opentess (upload over HTTP, storage, the processing
  job, extraction in worker processes, chunking, the database) against the extraction libraries
  called directly — in one process, and in as many processes as opentess's readers;
- retrieval: p50/p95 of the knowledge step at 1k, 10k and 100k chunks (bench/files_retrieval.py),
  on SQLite and, with --database-url, PostgreSQL;
- the OpenAI route's non-stream req/s for an agent with 20 linked files (retrieval on every
  call, a different question each time) against the same agent without files;
- upload memory: the server's RSS growth while a 150 MB file streams in (local storage, and S3
  through moto's server when moto is installed)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import files_retrieval, load, targets

AGENT_YAML = targets.AGENT_YAML
UPLOAD_MB = 150


@contextmanager
def server(upstream: str, database_url: str | None, env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """opentess on a fresh data directory (or database), with a user, a token and two agents."""
    port = targets.free_port()
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        if database_url and database_url.startswith("postgresql"):  # a database of its own, dropped after
            database_url = stack.enter_context(targets.fresh_database(database_url))
        full_env = {
            **targets.server_env(Path(tmp), targets.upstream_config(upstream)),
            "OPENTESS_PUBLIC_URL": f"http://127.0.0.1:{port}", **(env or {}),
        }  # fmt: skip
        agent_file = Path(tmp) / "agent.yaml"
        agent_file.write_text(AGENT_YAML)
        if database_url:
            full_env["OPENTESS_DATABASE_URL"] = database_url
            import subprocess

            subprocess.run([sys.executable, "-m", "opentess", "migrate"], env={**os.environ, **full_env}, check=True,
                           capture_output=True)  # fmt: skip
        email = f"files-{port}-{time.time_ns()}@example.com"
        user = targets._cli(full_env, "users", "create", email)
        workspace = str(user["default_workspace_id"])
        plain = targets._cli(full_env, "agents", "create", "--file", str(agent_file), "--workspace", workspace)
        knowing = targets._cli(full_env, "agents", "create", "--file", str(agent_file), "--workspace", workspace)
        token = targets._cli(full_env, "tokens", "create", "--user", email)["token"]
        args = [sys.executable, "-m", "opentess", "serve", "--port", str(port)]
        with targets.process(args, f"http://127.0.0.1:{port}/healthz", full_env) as proc:
            yield {
                "base": f"http://127.0.0.1:{port}", "token": token, "pid": proc.pid, "plain": plain["id"],
                "knowing": knowing["id"], "data_dir": Path(tmp) / "data", "database_url": database_url,
            }  # fmt: skip


def _headers(srv: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv['token']}"}


class _Progress:
    """How many of some files are still waiting, read from the server's database by the benchmark
    itself: asking the server over HTTP every few milliseconds would load the server it measures
    (a listing every 20 ms cost it about a tenth of the ingestion's CPU)."""

    def __init__(self, srv: dict[str, Any]) -> None:
        url = srv["database_url"]
        self.url: str | None = url if url and url.startswith("postgresql") else None
        if self.url:
            import asyncio

            import asyncpg
            from sqlalchemy.engine import make_url

            dsn = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
            self.loop = asyncio.new_event_loop()
            self.pg = self.loop.run_until_complete(asyncpg.connect(dsn))
        else:  # the embedded default (a --database-url of another kind is not measured here)
            import sqlite3

            path = srv["data_dir"] / "opentess.db"
            self.sqlite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)

    def waiting(self, ids: list[int]) -> int:
        if self.url:
            sql = "SELECT count(*) FROM files WHERE id = ANY($1::bigint[]) AND status = 'waiting'"
            return int(self.loop.run_until_complete(self.pg.fetchval(sql, ids)))
        marks = ",".join("?" * len(ids))
        row = self.sqlite.execute(f"SELECT count(*) FROM files WHERE id IN ({marks}) AND status = 'waiting'", ids)
        return int(row.fetchone()[0])

    def close(self) -> None:
        if self.url:
            self.loop.run_until_complete(self.pg.close())
            self.loop.close()
        else:
            self.sqlite.close()


def _wait_all(srv: dict[str, Any], ids: list[int], timeout_s: float = 1800) -> list[dict[str, Any]]:
    """The files (as the API shows them) once none is waiting; the database is looked at every
    5 ms meanwhile (_Progress)."""
    deadline = time.monotonic() + timeout_s
    progress = _Progress(srv)
    try:
        while progress.waiting(ids) and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        progress.close()
    wanted = set(ids)
    files = []
    with httpx.Client(base_url=srv["base"], headers=_headers(srv), timeout=60) as http:
        for page in range(1, 1000):
            listed = http.get("/files", params={"page": page, "per_page": 100}).json()
            files += [f for f in listed["data"] if f["id"] in wanted]
            if page >= listed["last_page"]:
                break
    return files


# ingestion -------------------------------------------------------------------------------------------


def _documents(directory: Path, count: int) -> list[Path]:
    """PDFs of 20 pages and DOCX files of 60 paragraphs, half and half."""
    import docx
    from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped]
    from reportlab.pdfgen import canvas  # type: ignore[import-untyped]

    corpus = files_retrieval.Corpus(seed=3)
    paths = []
    for n in range(count):
        if n % 2 == 0:
            path = directory / f"doc-{n}.pdf"
            c = canvas.Canvas(str(path), pagesize=A4)
            for _ in range(20):
                words = corpus.text(corpus.chunk_words(1)[0]).split()
                for line in range(0, len(words), 12):
                    c.drawString(40, 800 - line * 1.2, " ".join(words[line : line + 12]))
                c.showPage()
            c.save()
        else:
            path = directory / f"doc-{n}.docx"
            document = docx.Document()
            for row in corpus.chunk_words(60):
                document.add_paragraph(corpus.text(row)[:600])
            document.save(str(path))
        paths.append(path)
    return paths


def _direct(path: Path) -> int:
    """What a program calling the libraries itself would do: every page's or paragraph's text."""
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        return sum(len(page.extract_text() or "") for page in PdfReader(path).pages)
    import docx

    return sum(len(p.text) for p in docx.Document(str(path)).paragraphs)


def _upload_all(http: httpx.Client, paths: list[Path]) -> list[int]:
    return [
        http.post("/files", files={"file": (p.name, p.read_bytes())}, data={"process": "true"}).json()["id"]
        for p in paths
    ]


def ingestion(args: argparse.Namespace, upstream: str) -> str:
    """Rounds of the three paths in turn, each round seconds long (not a scheduler's hiccup); the
    medians are reported. opentess's readers are started and warm before the first round, as a
    running server's are; its progress is read from its database, not asked of it. On SQLite,
    and on PostgreSQL too with --database-url."""
    count, rounds, workers = (4, 1, 2) if args.quick else (120, 5, 2)
    backends: list[tuple[str, str | None]] = [("SQLite", None)]
    if args.database_url:
        backends.append(("PostgreSQL", args.database_url))
    lines = [
        f"#### Ingestion: {count} documents (20-page PDFs and 60-paragraph DOCX files), {rounds} round(s)",
        "",
        "| database | path | documents/s (median) | opentess / it | rounds |",
        "|---|---|---|---|---|",
    ]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        paths = _documents(Path(tmp), count)
        size = sum(p.stat().st_size for p in paths)
        for name, url in backends:
            direct_1, direct_n, through, not_done = _ingest(upstream, url, paths, rounds, workers)
            failed += not_done
            # the ratio of each round (its three paths measured back to back), then their median:
            # a machine that slows down for a while slows a round's paths alike
            ratio_1 = statistics.median(t / d for t, d in zip(through, direct_1, strict=True))
            ratio_n = statistics.median(t / d for t, d in zip(through, direct_n, strict=True))
            lines += [
                f"| {name} | pypdf / python-docx called directly, 1 process | {statistics.median(direct_1):.2f} | "
                f"{ratio_1:.2f}× | {_each(direct_1)} |",
                f"| {name} | the same, {workers} processes | {statistics.median(direct_n):.2f} | {ratio_n:.2f}× | "
                f"{_each(direct_n)} |",
                f"| {name} | opentess: upload, store, queue, extract ({workers} readers), chunk, index | "
                f"{statistics.median(through):.2f} | — | {_each(through)} |",
            ]
    lines += [
        "",
        f"{size / 1e6:.1f} MB of documents. opentess / it: the median of the "
        "rounds' ratios. Target: opentess ≥ 0.8× the libraries called directly. "
        f"Files that did not complete: {failed}.",
    ]
    return "\n".join(lines)


def _ingest(
    upstream: str, database_url: str | None, paths: list[Path], rounds: int, workers: int
) -> tuple[list[float], list[float], list[float], int]:
    """documents/s of each round: the libraries in this process, in ``workers`` processes, and
    opentess with ``workers`` readers; and how many files did not complete."""
    count = len(paths)
    direct_1: list[float] = []
    direct_n: list[float] = []
    through: list[float] = []
    failed = 0
    readers = {"OPENTESS_FILES_EXTRACT_WORKERS": str(workers)}
    with (
        ProcessPoolExecutor(workers) as pool,
        server(upstream, database_url, readers) as srv,
        httpx.Client(base_url=srv["base"], headers=_headers(srv), timeout=120) as http,
    ):
        _direct(paths[0]), _direct(paths[1])  # this process has imported the libraries
        list(pool.map(_direct, paths[: 2 * workers]))  # the processes are started and have too
        # every reader is started and has read both kinds: files uploaded at once keep them all busy
        warm = paths[: 2 * workers]
        with ThreadPoolExecutor(len(warm)) as uploads:
            ids = list(uploads.map(lambda p: _upload_all(http, [p])[0], warm))
        _wait_all(srv, ids)
        for _ in range(rounds):
            started = time.perf_counter()
            for path in paths:
                _direct(path)
            direct_1.append(count / (time.perf_counter() - started))
            started = time.perf_counter()
            list(pool.map(_direct, paths))
            direct_n.append(count / (time.perf_counter() - started))
            started = time.perf_counter()
            done = _wait_all(srv, _upload_all(http, paths))
            through.append(count / (time.perf_counter() - started))
            failed += sum(1 for f in done if f["status"] != "completed")
    return direct_1, direct_n, through, failed


def _each(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


# retrieval --------------------------------------------------------------------------------------------


def retrieval(args: argparse.Namespace) -> str:
    sizes = [1000] if args.quick else [1000, 10_000, 100_000]
    calls = 20 if args.quick else 300
    backends: list[tuple[str, str | None]] = [("SQLite", None)]
    if args.database_url:
        backends.append(("PostgreSQL", args.database_url))
    lines = [f"#### Retrieval: the knowledge step, {calls} calls, a different question each",
             "", "| database | chunks | searched in | p50 (ms) | p95 (ms) | excerpts a call |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, url in backends:
        for r in files_retrieval.run(url, sizes, calls):
            lines.append(f"| {name} | {r.chunks:,} | {r.index} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.retrieved:.1f} |")
    lines += ["", "Target: p95 ≤ 20 ms at 100k chunks. Knowledge of at most `files_memory_index_chunks` (2,000) "
              "chunks is searched in memory; the database's search is shown for it too."]  # fmt: skip
    return "\n".join(lines)


# the OpenAI route with files --------------------------------------------------------------------------------


def _wrk(url: str, headers: dict[str, str], bodies: list[bytes], connections: int, duration_s: float) -> float:
    """wrk with a different body at each request (round robin); requests/s."""
    import re
    import subprocess

    quoted = ", ".join(json.dumps(b.decode()) for b in bodies)
    header_lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n{header_lines}\n'
        f"local bodies = {{{quoted}}}\nlocal n = 0\n"
        "request = function()\n  n = n % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[n])\nend\n"
    )
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "-s", str(script), url],
            capture_output=True, text=True, timeout=duration_s + 60, check=True,
        ).stdout  # fmt: skip
    finally:
        script.unlink()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} failed requests")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def route(args: argparse.Namespace, upstream: str) -> str:
    if not load.have_wrk():
        return "#### The OpenAI route with 20 linked files\n\nwrk is not installed: skipped."
    corpus = files_retrieval.Corpus(seed=5)
    with (
        server(upstream, args.database_url) as srv,
        httpx.Client(base_url=srv["base"], headers=_headers(srv), timeout=120) as http,
    ):
        ids, questions = [], []
        for n in range(20):  # 20 files of about 3,000 tokens: 60,000 in all, retrieval on every call
            words = corpus.chunk_words(10)
            text = "\n\n".join(corpus.text(row) for row in words)
            ids.append(http.post("/files", files={"file": (f"manual-{n}.txt", text.encode())},
                                 data={"process": "true"}).json()["id"])  # fmt: skip
            questions += [corpus.question(words[k], random.Random(n * 10 + k)) for k in range(10)]
        linked = http.post(f"/agents/{srv['knowing']}/files?waitExecution=true", json={"file_ids": ids}).json()
        assert linked["files_count"]["completed"] == 20, linked
        bodies = [
            json.dumps({"model": "bench", "messages": [{"role": "user", "content": q}]}).encode() for q in questions
        ]
        check = http.post(f"/agents/{srv['knowing']}/openai/chat/completions", content=bodies[0],
                          headers={"Content-Type": "application/json"})  # fmt: skip
        execution = http.get(f"/agent-responses/{check.json()['agent_response']['id']}").json()
        excerpts = len(execution["knowledge"]["chunks"])
        rates: dict[str, list[float]] = {"plain": [], "knowing": []}
        for _ in range(args.repeat):
            for name in ("plain", "knowing"):
                url = f"{srv['base']}/agents/{srv[name]}/openai/chat/completions"
                rates[name].append(_wrk(url, _headers(srv), bodies, 32, args.duration))
    plain, knowing = statistics.median(rates["plain"]), statistics.median(rates["knowing"])
    return "\n".join(
        [
            "#### The OpenAI route, non-stream, 32 connections",
            "",
            "| agent | req/s | / without files |",
            "|---|---|---|",
            f"| without files | {plain:,.0f} | 1.00× |",
            f"| 20 linked files (about 60k tokens; {excerpts} excerpts a call, full text) | {knowing:,.0f} "
            f"| {knowing / plain:.2f}× |",
            "",
            "Target: ≥ 0.7× the same agent without files. Each request asks a different question (200 in turn).",
        ]
    )


# upload memory ---------------------------------------------------------------------------------------------


def _rss_peak(pid: int, stop: threading.Event, out: list[int]) -> None:
    while not stop.is_set():
        out.append(targets.rss_kib(pid))
        time.sleep(0.01)


def _upload_memory(srv: dict[str, Any], megabytes: int) -> tuple[float, float, float]:
    """(RSS before MiB, peak growth MiB, seconds) of one streamed multipart upload."""
    boundary = "benchboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="process"\r\n\r\nfalse\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    tail = f"\r\n--{boundary}--\r\n".encode()
    piece = os.urandom(1024 * 1024)

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(megabytes):
            yield piece
        yield tail

    length = len(head) + megabytes * len(piece) + len(tail)
    headers = {**_headers(srv), "Content-Type": f"multipart/form-data; boundary={boundary}",
               "Content-Length": str(length)}  # fmt: skip
    before = targets.rss_kib(srv["pid"])
    samples: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_rss_peak, args=(srv["pid"], stop, samples))
    watcher.start()
    started = time.perf_counter()
    try:
        answer = httpx.post(f"{srv['base']}/files", content=body(), headers=headers, timeout=600)
    finally:
        stop.set()
        watcher.join()
    elapsed = time.perf_counter() - started
    if answer.status_code != 200 or answer.json()["bytes"] != megabytes * len(piece):
        raise RuntimeError(f"upload failed: {answer.status_code} {answer.text[:300]}")
    return before / 1024, (max(samples, default=before) - before) / 1024, elapsed


@contextmanager
def _moto() -> Iterator[dict[str, str]]:
    """moto's S3 server in this process, a bucket, and the settings that use it."""
    import boto3  # type: ignore[import-untyped]
    from moto.server import ThreadedMotoServer

    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    try:
        host, port = s3.get_host_and_port()
        endpoint, bucket = f"http://{host}:{port}", f"bench-{secrets.token_hex(4)}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench-secret").create_bucket(Bucket=bucket)  # fmt: skip
        yield {**credentials, "OPENTESS_FILES_STORAGE": "s3", "OPENTESS_S3_BUCKET": bucket,
               "OPENTESS_S3_ENDPOINT_URL": endpoint, "OPENTESS_S3_REGION": "us-east-1"}  # fmt: skip
    finally:
        s3.stop()


def upload_memory(args: argparse.Namespace, upstream: str) -> str:
    megabytes = 20 if args.quick else UPLOAD_MB
    rows = []
    with server(upstream, args.database_url) as srv:
        _upload_memory(srv, 2)  # the route's first call (imports, pools) is not the upload's cost
        before, growth, seconds = _upload_memory(srv, megabytes)
        rows.append(f"| local data directory | {before:.1f} | {growth:+.1f} | {megabytes / seconds:.0f} |")
    try:
        import moto  # noqa: F401  (a test dependency)
    except ImportError:
        rows.append("| S3 (moto) | — | not measured: moto is not installed | — |")
    else:
        with _moto() as s3_env, server(upstream, args.database_url, s3_env) as srv:
            _upload_memory(srv, 2)
            before, growth, seconds = _upload_memory(srv, megabytes)
            rows.append(f"| S3-compatible (moto's server) | {before:.1f} | {growth:+.1f} | {megabytes / seconds:.0f} |")
    return "\n".join(
        [
            f"#### Upload memory: one {megabytes} MB file, multipart, streamed",
            "",
            "| storage | server RSS before (MiB) | peak growth during the upload (MiB) | MB/s |",
            "|---|---|---|---|",
            *rows,
            "",
            "Target: growth ≤ 20 MB.",
        ]
    )


def report(args: argparse.Namespace) -> str:
    with targets.fake_upstream() as (upstream, _):
        parts = ["### Files and knowledge", ""]
        scenarios: list[tuple[str, Callable[[], str]]] = [
            ("ingestion", functools.partial(ingestion, args, upstream)),
            ("retrieval", functools.partial(retrieval, args)),
            ("route", functools.partial(route, args, upstream)),
            ("upload memory", functools.partial(upload_memory, args, upstream)),
        ]
        for name, make in scenarios:
            parts += [make(), ""]
            print(f"  measured files: {name}", file=sys.stderr)
    return "\n".join(parts)
