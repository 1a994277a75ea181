"""Replay the attacks of the hardening issue (#11) against one real `opentess serve` and report
what the server answered, whether it kept answering, and what it kept afterwards.

    python -m bench.attacks [--quick] [--output FILE]

One server on the embedded SQLite in a temporary data dir, two tenants (an attacker and another
workspace), an agent on the fast fake upstream (bench/fake_upstream.py). While the attacks run, a
thread asks ``GET /healthz`` on a fresh connection every ~100 ms and samples the server's RSS.
Every HTTP answer is counted by status class; every 5xx is listed with the request that caused
it (a 5xx is a finding, except the connection cap's designed 503 refusal, which is counted on its
own). Afterwards the executions still ``starting``/``running`` are counted through the API.

This is a measurement, not a test: nothing here fails when a number is bad. ``--quick`` runs a
small version of every class (tests/test_bench.py checks that the harness still runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench import fake_upstream, load, targets

BIG = "9223372036854775808"  # 2**63
MODEL_Q: dict[str, Any] = {"type": "select", "name": "model", "options": ["bench"]}
PRODUCT_Q: dict[str, Any] = {"type": "text", "name": "product", "default": "tea"}
COUNT_Q: dict[str, Any] = {"type": "number", "name": "count", "default": 1, "max": 10**9}
HELLO = [{"role": "user", "content": "Hello"}]
HEALTH_EVERY_S = 0.1


@dataclass(frozen=True)
class Plan:
    """How much of every class to run (the full replay, or --quick)."""

    distinct_values: int = 40
    hostile_rounds: int = 3
    slow_headers: int = 300
    idle: int = 3000
    oversized: int = 40
    oversized_bytes: int = 8 * 1024 * 1024
    slow_bodies: int = 200
    slow_interval_s: float = 3.0
    connection_patience_s: float = 75.0
    cap_probe: bool = True
    abrupt_streams: int = 1000
    conversation_turn_chars: int = 300_000
    timing_samples: int = 200
    settle_s: float = 10.0
    passes: int = 2  # the second pass tells a leak (growth again) from a high-water mark (none)


QUICK = Plan(
    distinct_values=5,
    hostile_rounds=1,
    slow_headers=10,
    idle=100,
    oversized=4,
    oversized_bytes=1024 * 1024,
    slow_bodies=8,
    abrupt_streams=60,
    timing_samples=30,
    settle_s=10.0,
    passes=1,
)


# --- the server ------------------------------------------------------------------------------------


class SlowUpstream(threading.Thread):
    """An OpenAI-compatible upstream whose streams take a while (``chunks`` content events
    ``delay_s`` apart, chunked encoding), so that a client hanging up lands mid-run. Non-streaming
    requests get bench/fake_upstream.py's completion at once."""

    def __init__(self, chunks: int = 40, delay_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.port = targets.free_port()
        self.chunks = chunks
        self.delay_s = delay_s
        self.ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=4096))
        self.ready.set()
        loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if b'"stream":true' not in body.replace(b" ", b""):
                    writer.write(fake_upstream.JSON_RESPONSE)
                    await writer.drain()
                    continue
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                events = [fake_upstream._chunk({"role": "assistant", "content": ""}, None)]
                events += [fake_upstream._chunk({"content": f"slow{i} "}, None) for i in range(self.chunks)]
                events += [fake_upstream._chunk({}, "stop"), b"data: [DONE]\n\n"]
                for event in events:
                    writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(self.delay_s)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


@dataclass
class Server:
    url: str
    host: str
    port: int
    pid: int
    data_dir: Path
    log: Path
    token: str  # the attacker's token (a workspace member)
    other_token: str  # another workspace's member
    limited_token: str  # made by the operator with a short expiry and low limits
    limited_id: int
    agent_id: int  # the attacker's bench agent
    other_agent_id: int  # the other workspace's agent
    max_connections: int


AGENT_B_YAML = """\
title: Other tenant
type: chat
instructions: "You are the other tenant's assistant. Answer in {{ language }}."
questions:
  - {type: select, name: model, options: [bench]}
  - {type: text, name: language, default: English}
"""


@contextlib.contextmanager
def server(upstream: str, slow_upstream: str, extra_env: dict[str, str]) -> Iterator[Server]:
    port = targets.free_port()
    dead = targets.free_port()  # nothing listens there: a model whose upstream is down
    with tempfile.TemporaryDirectory(prefix="opentess-attacks-") as tmp:
        root = Path(tmp)
        env = targets.server_env(
            root,
            targets.upstream_config(upstream) + "\n"
            f'[models.dead]\nprovider = "openai"\nbase_url = "http://127.0.0.1:{dead}/v1"\n\n'
            f'[models.slow]\nprovider = "openai"\nbase_url = "{slow_upstream}/v1"\n',
        )
        (root / "agent.yaml").write_text(targets.AGENT_YAML)
        (root / "other.yaml").write_text(AGENT_B_YAML)
        attacker = targets._cli(env, "users", "create", "attacker@example.com")
        other = targets._cli(env, "users", "create", "other@example.com")
        agent = targets._cli(
            env, "agents", "create", "--file", str(root / "agent.yaml"), "--workspace",
            str(attacker["default_workspace_id"]),
        )  # fmt: skip
        other_agent = targets._cli(
            env, "agents", "create", "--file", str(root / "other.yaml"), "--workspace",
            str(other["default_workspace_id"]),
        )  # fmt: skip
        token = targets._cli(env, "tokens", "create", "--user", "attacker@example.com")
        other_token = targets._cli(env, "tokens", "create", "--user", "other@example.com")
        limited = targets._cli(
            env, "tokens", "create", "--user", "attacker@example.com", "--name", "limited",
            "--expires-in", "0.02", "--rpm", "30", "--concurrency", "1",
        )  # fmt: skip
        args = [sys.executable, "-m", "opentess", "serve", "--port", str(port)]
        log = root / "server.log"
        with targets.process(args, f"http://127.0.0.1:{port}/healthz", {**env, **extra_env}, log) as proc:
            yield Server(
                url=f"http://127.0.0.1:{port}",
                host="127.0.0.1",
                port=port,
                pid=proc.pid,
                data_dir=root / "data",
                log=log,
                token=str(token["token"]),
                other_token=str(other_token["token"]),
                limited_token=str(limited["token"]),
                limited_id=int(str(limited["id"])),
                agent_id=int(str(agent["id"])),
                other_agent_id=int(str(other_agent["id"])),
                max_connections=int(
                    extra_env.get("OPENTESS_MAX_CONNECTIONS", os.environ.get("OPENTESS_MAX_CONNECTIONS", "4096"))
                ),
            )


def rss_split(pid: int) -> tuple[int, int]:
    """(the server process's RSS, its child processes' RSS) in KiB: the template renderers are
    children that come and go, so they are shown apart."""

    def rss(p: int) -> int:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    children: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children.update(int(c) for c in (task / "children").read_text().split())
    return rss(pid), sum(rss(c) for c in children)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- what happened -------------------------------------------------------------------------------


@dataclass
class Call:
    cls: str
    what: str
    method: str
    path: str
    status: int | None  # None: no HTTP answer (reset, timeout, closed)
    detail: str  # the answer's start, or the transport error
    as_designed: bool
    designed_5xx: bool = False  # a 5xx the request was meant to get (an upstream that is down → 502)


@dataclass
class Ledger:
    calls: list[Call] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # per class: measurements in words
    prefix: str = ""  # the pass, in notes
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def note(self, cls: str, text: str) -> None:
        with self.lock:
            self.notes.setdefault(cls, []).append(self.prefix + text)


Expect = Callable[[httpx.Response], bool]


def is_4xx(resp: httpx.Response) -> bool:
    return 400 <= resp.status_code < 500


def status_in(*codes: int) -> Expect:
    return lambda resp: resp.status_code in codes


class Api:
    """HTTP calls that are recorded in the ledger under an attack class."""

    def __init__(self, srv: Server, ledger: Ledger) -> None:
        self.srv = srv
        self.ledger = ledger
        self.clients: dict[str, httpx.Client] = {}
        self.lock = threading.Lock()

    def client(self, token: str) -> httpx.Client:
        key = f"{threading.get_ident()}:{token}"
        with self.lock:
            if key not in self.clients:
                self.clients[key] = httpx.Client(
                    base_url=self.srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
                )
            return self.clients[key]

    def close(self) -> None:
        for c in self.clients.values():
            c.close()

    def __call__(
        self,
        cls: str,
        what: str,
        method: str,
        path: str,
        expect: Expect = is_4xx,
        token: str | None = None,
        raw_path: bytes | None = None,
        designed_5xx: bool = False,
        **kwargs: Any,
    ) -> httpx.Response | None:
        http = self.client(token or self.srv.token)
        try:
            if raw_path is not None:  # sent as is: httpx would otherwise normalise it
                request = http.build_request(method, path, **kwargs)
                request.url = request.url.copy_with(raw_path=raw_path)
                resp = http.send(request)
                shown = raw_path.decode("utf-8", "replace")
            else:
                resp = http.request(method, path, **kwargs)
                shown = path
        except httpx.HTTPError as exc:
            self.ledger.add(Call(cls, what, method, path, None, f"{type(exc).__name__}: {exc}", False))
            return None
        ok = (resp.status_code < 500 or designed_5xx) and expect(resp)
        self.ledger.add(Call(cls, what, method, shown[:120], resp.status_code, resp.text[:300], ok, designed_5xx))
        return resp


# --- /healthz throughout -------------------------------------------------------------------------


class Watch(threading.Thread):
    """Asks /healthz on a fresh connection every ~100 ms (as a load balancer would) and samples
    the server's RSS; counts failures by phase."""

    def __init__(self, srv: Server) -> None:
        super().__init__(daemon=True)
        self.srv = srv
        self.phase = "start"
        self.prefix = ""  # the pass
        self.stopping = threading.Event()
        self.polls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # the connection cap's 503
        self.failure_samples: dict[str, str] = {}
        self.latency: dict[str, list[float]] = {}
        self.peak = (0, 0)  # (own, children) at the highest total
        self.last_rss: dict[str, tuple[int, int]] = {}  # per phase: the last sample, i.e. at its end

    def run(self) -> None:
        while not self.stopping.is_set():
            phase = self.prefix + self.phase
            started = time.perf_counter()
            error = ""
            try:
                conn = http.client.HTTPConnection(self.srv.host, self.srv.port, timeout=5)
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                if resp.status == 503 and b"Too many open connections" in body:
                    self.refused[phase] += 1
                elif resp.status != 200:
                    error = f"{resp.status} {body[:120]!r}"
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - started
            self.polls[phase] += 1
            self.latency.setdefault(phase, []).append(elapsed * 1000)
            if error:
                self.failures[phase] += 1
                self.failure_samples.setdefault(phase, error)
            own, children = rss_split(self.srv.pid)
            self.last_rss[phase] = (own, children)
            if own + children > sum(self.peak):
                self.peak = (own, children)
            self.stopping.wait(max(0.0, HEALTH_EVERY_S - elapsed))


# --- 1. hostile templates ------------------------------------------------------------------------

NESTED = "{% for i in range(100000) %}{% for j in range(4000) %}{% endfor %}{% endfor %}{{ product }}"
TRIPLE = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}"
    "{% endfor %}{% endfor %}{% endfor %}{{ product }}"
)
SAVE_TIME: list[tuple[str, str, list[dict[str, Any]], Expect]] = [  # refused when saved, or else fail cleanly
    ("nested range loops (issue's example)", NESTED, [PRODUCT_Q], is_4xx),
    ("three nested range loops", TRIPLE, [PRODUCT_Q], is_4xx),
    ("'A' * 5,000,000", "{{ 'A' * 5000000 }}{{ product }}", [PRODUCT_Q], is_4xx),
    ("2 ** 100000", "{{ 2 ** 100000 }}", [], is_4xx),
    ("1/0", "{{ 1/0 }}", [], is_4xx),
    ("include", "{% include 'x' %}", [], is_4xx),
    ("range(100001)", "{{ range(100001) }}", [], is_4xx),
    ("reserved name messages", "{{ messages }}", [], is_4xx),
    ("instructions of 1,000,000 characters", "x" * 1_000_000, [], is_4xx),
    # temperature is a steering name that instructions may read (its value is known when they render)
    ("reserved name temperature", "{{ temperature }}", [], lambda r: r.status_code in (200, 400, 422)),
]
CALL_TIME = [  # saved (harmless with their defaults), hostile only with the caller's values
    ("loops sized by the caller", "{% for i in range(count) %}{% for j in range(100000) %}{% endfor %}{% endfor %}ok",
     {"count": 100000}),
    ("division by the caller's 0", "{{ 10 / count }}", {"count": 0}),
    ("'A' * the caller's 10,000,000", "{{ 'A' * count }}", {"count": 10_000_000}),
    ("a list of the caller's 100,000,000", "{{ ([0] * count) | length }}", {"count": 100_000_000}),
    ("2 ** the caller's 10,000,000", "{{ 2 ** count }}", {"count": 10_000_000}),
]  # fmt: skip


def chat_path(agent_id: int | str) -> str:
    return f"/agents/{agent_id}/openai/chat/completions"


def make_agent(
    api: Api,
    cls: str,
    what: str,
    instructions: str,
    questions: list[dict[str, Any]],
    model: str = "bench",
    hostile: bool = False,
) -> int | None:
    """Save an agent: expected to be saved (201), or for a ``hostile`` one, 201 or 422."""
    model_q = {**MODEL_Q, "options": [model]}
    body = {"title": f"Hostile: {what}"[:100], "instructions": instructions, "questions": [model_q, *questions]}
    expect = status_in(201, 422) if hostile else status_in(201)
    resp = api(cls, f"save: {what}", "POST", "/agents", expect, json=body)
    if resp is not None and resp.status_code == 201:
        return int(resp.json()["id"])
    return None


def quiet_latency(api: Api, srv: Server, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        api("1 hostile templates", "other tenant: GET /agents (quiet)", "GET", "/agents", status_in(200),
            token=srv.other_token)  # fmt: skip
        out.append((time.perf_counter() - started) * 1000)
    return out


def during(action: Callable[[], object], probes: list[Callable[[], object]]) -> tuple[float, dict[int, list[float]]]:
    """Run ``action`` in a thread; meanwhile run each probe in turn, timing each; return the
    action's duration and the probes' latencies (ms)."""
    latencies: dict[int, list[float]] = {i: [] for i in range(len(probes))}
    done = threading.Event()
    started = time.perf_counter()
    duration = [0.0]

    def run() -> None:
        try:
            action()
        finally:
            duration[0] = time.perf_counter() - started
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.05)
    while not done.is_set():
        for i, probe in enumerate(probes):
            t = time.perf_counter()
            probe()
            latencies[i].append((time.perf_counter() - t) * 1000)
    thread.join()
    return duration[0], latencies


def ms(values: list[float]) -> str:
    if not values:
        return "—"
    return f"p50 {statistics.median(values):.1f} ms, max {max(values):.1f} ms (n={len(values)})"


def hostile_templates(api: Api, srv: Server, plan: Plan, watch: Watch) -> None:
    cls = "1 hostile templates"
    watch.phase = cls
    for what, source, questions, expect in SAVE_TIME:
        agent = make_agent(api, cls, what, source, questions, hostile=True)
        if agent is not None:  # saved after all: it must still fail cleanly when called
            api(cls, f"call: {what}", "POST", chat_path(agent), expect, json={"messages": HELLO})
    # an existing agent edited into each hostile template
    editable = make_agent(api, cls, "harmless", "Hello {{ product }}", [PRODUCT_Q])
    for what, source, questions, _ in SAVE_TIME[:6]:
        api(cls, f"PATCH into: {what}", "PATCH", f"/agents/{editable}",
            json={"instructions": source, "questions": [MODEL_Q, *questions]})  # fmt: skip
    quiet = quiet_latency(api, srv, 50)
    fresh = iter(range(10**9))

    def other_agents() -> None:
        api(cls, "other tenant: GET /agents during a hostile render", "GET", "/agents", status_in(200),
            token=srv.other_token)  # fmt: skip

    def other_render() -> None:  # a value never seen: its instructions must be rendered, not cached
        api(cls, "other tenant: a call whose template must render, during hostile renders", "POST",
            chat_path(srv.other_agent_id), status_in(200), token=srv.other_token,
            json={"messages": HELLO, "language": f"English {next(fresh)}"})  # fmt: skip

    quiet_render = []
    for _ in range(20):
        t = time.perf_counter()
        other_render()
        quiet_render.append((time.perf_counter() - t) * 1000)
    ledger_note = api.ledger.note
    ledger_note(cls, f"other tenant's GET /agents, quiet: {ms(quiet)}")
    ledger_note(cls, f"other tenant's call that renders its template, quiet: {ms(quiet_render)}")
    salt = f"{{# {watch.prefix or 'pass 1'} #}}"  # a slow template is refused at once for a while afterwards
    for what, source, values in CALL_TIME:
        agent = make_agent(api, cls, what, salt + source, [COUNT_Q])
        if agent is None:
            continue
        outcome: list[httpx.Response | None] = []

        def hostile(
            agent: int = agent,
            values: dict[str, Any] = values,
            what: str = what,
            outcome: list[httpx.Response | None] = outcome,
        ) -> None:
            outcome.append(api(cls, f"call: {what}", "POST", chat_path(agent), json={"messages": HELLO, **values}))

        took, lat = during(hostile, [other_agents])
        resp = outcome[0] if outcome else None
        answer = f"{resp.status_code} {resp.text[:160]}" if resp is not None else "no answer"
        ledger_note(cls, f"{what}: answered in {took * 1000:.0f} ms: `{answer}`; meanwhile the other tenant's "
                         f"GET /agents: {ms(lat[0])}")  # fmt: skip
        # the same call again: refused at once for a while (the template is remembered as slow)
        again = api(cls, f"call again: {what}", "POST", chat_path(agent), json={"messages": HELLO, **values})
        if again is not None and what == CALL_TIME[0][0]:
            took_ms = again.elapsed.total_seconds() * 1000
            ledger_note(cls, f"{what}, called again: {again.status_code} in {took_ms:.0f} ms")
        stream = api(cls, f"call streamed: {what}", "POST", chat_path(agent),
                     json={"messages": HELLO, "stream": True, **values})  # fmt: skip
        native = api(cls, f"call /execute: {what}", "POST", f"/agents/{agent}/execute",
                     json={"messages": HELLO, **values})  # fmt: skip
        del stream, native
    # several distinct slow templates at once (each is remembered only after it was slow once):
    # the renderer pool is shared, so the other tenant's renders may wait for a slot
    loops: list[int] = []
    for n in range(4 * plan.hostile_rounds):
        source = f"{salt}{{# {n} #}}{CALL_TIME[0][1]}"
        agent = make_agent(api, cls, f"slow loop #{n}", source, [COUNT_Q])
        if agent is not None:
            loops.append(agent)

    def four_at_once() -> None:
        for start in range(0, len(loops), 4):
            threads = [
                threading.Thread(
                    target=api, args=(cls, "call: 4 distinct slow templates at once", "POST", chat_path(a)),
                    kwargs={"json": {"messages": HELLO, "count": 100000}},
                )
                for a in loops[start : start + 4]
            ]  # fmt: skip
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    took, lat = during(four_at_once, [other_agents, other_render])
    ledger_note(cls, f"{len(loops)} distinct slow templates, 4 at a time, for {took:.1f} s: meanwhile the other "
                     f"tenant's GET /agents {ms(lat[0])}; its calls that render a template {ms(lat[1])}")  # fmt: skip


# --- 2. many distinct values, each rendering a large output -----------------------------------------------------


def distinct_values(api: Api, srv: Server, plan: Plan, watch: Watch) -> None:
    cls = "2 distinct values × large output"
    watch.phase = cls
    agent = make_agent(api, cls, "199,000 characters", "{{ 'A' * 199000 }}{{ product }}", [PRODUCT_Q])
    if agent is None:
        return
    before_rss, before_disk = rss_split(srv.pid), dir_bytes(srv.data_dir)
    for n in range(plan.distinct_values):
        api(cls, "call with a new product", "POST", chat_path(agent), status_in(200),
            json={"messages": HELLO, "product": f"product {n} " + "p" * 500})  # fmt: skip
    after_rss, after_disk = rss_split(srv.pid), dir_bytes(srv.data_dir)
    api.ledger.note(
        cls,
        f"{plan.distinct_values} calls, each rendering ~200,000 characters of instructions: server RSS "
        f"{before_rss[0] / 1024:.0f} → {after_rss[0] / 1024:.0f} MiB (renderers {before_rss[1] / 1024:.0f} → "
        f"{after_rss[1] / 1024:.0f} MiB), data dir {before_disk / 1e6:.1f} → {after_disk / 1e6:.1f} MB",
    )


# --- 3. connections without a token ----------------------------------------------------------------


@dataclass
class ConnResult:
    kind: str
    outcomes: Counter[str] = field(default_factory=Counter)
    times: list[float] = field(default_factory=list)  # seconds from connect to the server's answer/close
    timing: str = ""  # instead of the times


async def _watch_socket(reader: asyncio.StreamReader, deadline: float) -> tuple[str, bool]:
    """Read what the server sends until it closes or the deadline: (its status, closed?). The
    connection cap's refusal is told apart from any other 503 (status ``CAP``): a connection of
    any phase may meet the cap while the phase's other connections are open."""
    first = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return (_status_of(first) if first else "no answer"), False
            chunk = await asyncio.wait_for(reader.read(65536), timeout=left)
            if not chunk:
                if b"Too many open connections" in first:
                    return CAP, True
                return (_status_of(first) if first else "no answer"), True
            if len(first) < 512:
                first += chunk
    except TimeoutError:
        return (_status_of(first) if first else "no answer"), False
    except (ConnectionError, OSError):
        return (_status_of(first) if first else "reset"), True


CAP = "the connection cap's 503"


def _status_of(data: bytes) -> str:
    parts = data.split(b" ", 2)
    return parts[1].decode("ascii", "replace") if len(parts) > 1 and data.startswith(b"HTTP/") else "garbage"


async def _one_conn(
    srv: Server, result: ConnResult, patience: float, opening: bytes, drip: Callable[[int], bytes] | None,
    interval: float, flood: int = 0,
) -> None:  # fmt: skip
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
    except OSError as exc:
        result.outcomes[f"connect failed ({type(exc).__name__})"] += 1
        return
    watcher = asyncio.ensure_future(_watch_socket(reader, started + patience))
    try:
        if opening:
            writer.write(opening)
        sent = 0
        while flood and sent < flood and not watcher.done():
            writer.write(b"A" * 65536)
            sent += 65536
            await writer.drain()
        n = 0
        while drip is not None and not watcher.done():
            await asyncio.wait({watcher}, timeout=interval)
            if watcher.done():
                break
            writer.write(drip(n))
            await writer.drain()
            n += 1
    except (ConnectionError, OSError):
        pass
    status, closed = await watcher
    elapsed = time.monotonic() - started
    if status == CAP:  # counted with the cap probe's refusals (the report's designed 503s)
        result.outcomes["503 and closed"] += 1
    else:
        result.outcomes[f"{status}, {'closed' if closed else f'still open after {patience:.0f} s'}"] += 1
    if closed:
        result.times.append(elapsed)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def _batched(coros: list[Any], batch: int = 200) -> None:
    """Start the coroutines in batches (so the listen backlog is not the thing measured)."""
    tasks = []
    for i in range(0, len(coros), batch):
        tasks += [asyncio.ensure_future(c) for c in coros[i : i + batch]]
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)


async def _connections(srv: Server, plan: Plan) -> list[ConnResult]:
    head = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n"
    body_head = (
        f"POST {chat_path(srv.agent_id)} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {srv.token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    slow = ConnResult(f"slow headers: one header line every {plan.slow_interval_s:g} s")
    idle = ConnResult("idle: connect, send nothing")
    big = ConnResult(f"unfinished header of {plan.oversized_bytes / 2**20:g} MiB, sent as fast as read")
    over = ConnResult("unfinished header of 80 KiB (just over the limit), then waiting")
    whole = ConnResult("a complete head of 100 KiB in one write (the limit is 64 KiB)")
    body = ConnResult(f"slow body: 1 of 1,000 bytes every {plan.slow_interval_s:g} s (with a token)")
    p, iv = plan.connection_patience_s, plan.slow_interval_s
    coros = (
        [_one_conn(srv, slow, p, head, lambda n: f"X-Slow-{n}: a\r\n".encode(), iv) for _ in range(plan.slow_headers)]
        + [_one_conn(srv, idle, p, b"", None, iv) for _ in range(plan.idle)]
        + [_one_conn(srv, big, p, head + b"X-Big: ", None, iv, plan.oversized_bytes) for _ in range(plan.oversized)]
        + [_one_conn(srv, over, p, head + b"X-Big: " + b"A" * 80 * 1024, None, iv) for _ in range(plan.oversized)]
        + [_one_conn(srv, whole, p, head + b"X-Big: " + b"A" * 100 * 1024 + b"\r\n\r\n", None, iv)
           for _ in range(plan.oversized)]
        + [_one_conn(srv, body, p, body_head, lambda n: b" ", iv) for _ in range(plan.slow_bodies)]
    )  # fmt: skip
    await _batched(coros)
    return [slow, idle, big, over, whole, body]


async def _cap_probe(srv: Server, extra: int) -> ConnResult:
    """Open max_connections + extra idle connections at once: the ones past the cap must get 503."""
    result = ConnResult(f"connection cap: {srv.max_connections:,} + {extra} idle connections at once")
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    started = time.monotonic()
    for _ in range(0, srv.max_connections + extra, 200):
        batch = await asyncio.gather(
            *(asyncio.open_connection(srv.host, srv.port) for _ in range(200)), return_exceptions=True
        )
        for item in batch:
            if isinstance(item, BaseException):
                result.outcomes[f"connect failed ({type(item).__name__})"] += 1
            else:
                opened.append(item)
    result.timing = f"{len(opened):,} opened in {time.monotonic() - started:.1f} s; answers read 1 s later"

    async def answer(reader: asyncio.StreamReader) -> str:
        try:
            data = await asyncio.wait_for(reader.read(256), timeout=1.0)
        except TimeoutError:
            return "held open (within the cap)"
        except (ConnectionError, OSError):
            return "reset"
        return f"{_status_of(data)} and closed" if data else "closed without answer"

    result.outcomes.update(await asyncio.gather(*(answer(reader) for reader, _ in opened)))
    for _, writer in opened:
        writer.close()
    await asyncio.sleep(1.0)
    return result


def connections(srv: Server, plan: Plan, watch: Watch, ledger: Ledger) -> list[ConnResult]:
    watch.phase = "3 connections"
    results = asyncio.run(_connections(srv, plan))
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if plan.cap_probe and soft > srv.max_connections + 600:
        watch.phase = "3 connection cap"
        results.append(asyncio.run(_cap_probe(srv, 50)))
    else:
        ledger.note("3 connections", f"connection cap not probed: this process may open {soft} files")
    return results


# --- 4. token self-extension ------------------------------------------------------------------------


def tokens(api: Api, srv: Server, watch: Watch) -> None:
    cls = "4 token authority"
    watch.phase = cls
    limited = srv.limited_token
    me = api(cls, "own token as seen", "GET", "/tokens", status_in(200), token=limited)
    mine: dict[str, Any] = {}
    if me is not None and me.status_code == 200:
        mine = next((t for t in me.json()["data"] if t["id"] == srv.limited_id), {})
    parent = (mine.get("expires_at"), mine.get("rpm_limit"), mine.get("concurrency_limit"))

    def capped(resp: httpx.Response) -> bool:
        if resp.status_code != 201:
            return False
        body = resp.json()
        return (
            body["expires_at"] is not None
            and (parent[0] is None or body["expires_at"] <= parent[0])
            and body["rpm_limit"] is not None and body["rpm_limit"] <= (parent[1] or 10**18)
            and body["concurrency_limit"] is not None and body["concurrency_limit"] <= (parent[2] or 10**18)
        )  # fmt: skip

    child = api(cls, "POST /tokens with no limits asked", "POST", "/tokens", capped, token=limited,
                json={"name": "child"})  # fmt: skip
    wider: list[dict[str, float | int]] = [
        {"expires_in_days": 365}, {"rpm_limit": 10**9}, {"concurrency_limit": 1000},
        {"expires_in_days": 36500, "rpm_limit": 2147483647},
    ]  # fmt: skip
    for ask in wider:
        api(cls, f"POST /tokens asking {ask}", "POST", "/tokens", lambda r: r.status_code == 403 or capped(r),
            token=limited, json={"name": "wider", **ask})  # fmt: skip
    widen: list[dict[str, int | None]] = [
        {"rpm_limit": 10**9}, {"concurrency_limit": 1000}, {"rpm_limit": None}, {"concurrency_limit": None}
    ]  # fmt: skip
    for change in widen:
        api(cls, f"PATCH own token {change}", "PATCH", f"/tokens/{srv.limited_id}", status_in(403), token=limited,
            json=change)  # fmt: skip
    if child is not None and child.status_code == 201:
        child_secret = child.json()["token"]
        api(cls, "child token: PATCH its parent to rpm 10**9", "PATCH", f"/tokens/{srv.limited_id}", is_4xx,
            token=child_secret, json={"rpm_limit": 10**9})  # fmt: skip
        api(cls, "child token: POST /tokens asking a year", "POST", "/tokens",
            lambda r: r.status_code == 403 or capped(r), token=child_secret,
            json={"expires_in_days": 365})  # fmt: skip
    after = api(cls, "own token afterwards", "GET", "/tokens", status_in(200), token=limited)
    if after is not None and after.status_code == 200:
        now: dict[str, Any] = next((t for t in after.json()["data"] if t["id"] == srv.limited_id), {})
        api.ledger.note(
            cls,
            f"operator's token (expires {parent[0]}, rpm {parent[1]}, concurrency {parent[2]}) after the attempts: "
            f"expires {now.get('expires_at')}, rpm {now.get('rpm_limit')}, concurrency {now.get('concurrency_limit')}",
        )


# --- 5/6. conversations that grow -------------------------------------------------------------------


def conversations(api: Api, srv: Server, plan: Plan, watch: Watch) -> None:
    cls = "5/6 conversation growth"
    watch.phase = cls
    path = chat_path(srv.agent_id)
    turn = plan.conversation_turn_chars
    first = api(cls, "900,000 characters", "POST", path, status_in(200),
                json={"messages": [{"role": "user", "content": "x" * 900_000}]})  # fmt: skip
    if first is not None and first.status_code == 200:
        root = first.json()["agent_response"]["id"]
        more = {"messages": [{"role": "user", "content": "y" * 900_000}], "root_id": root}
        api(cls, "continuation of 900,000 more (root_id)", "POST", path, status_in(413), json=more)
        api(cls, "continuation of 900,000 more (root_id, /execute)", "POST", f"/agents/{srv.agent_id}/execute",
            status_in(413), json=more)  # fmt: skip
    stored: list[str] = []
    root = None
    statuses = []
    for n in range(8):
        body: dict[str, Any] = {"messages": [{"role": "user", "content": chr(97 + n) * turn}]}
        if root is not None:
            body["root_id"] = root
        within = (n + 1) * turn < 1_000_000 - 1000  # the input limit (max_input_chars) with room for instructions
        resp = api(cls, f"turn {n + 1} of {turn:,} characters", "POST", path,
                   status_in(200) if within else status_in(413), json=body)  # fmt: skip
        if resp is None:
            break
        statuses.append(resp.status_code)
        if resp.status_code != 200:
            break
        execution = resp.json()["agent_response"]["id"]
        root = root or execution
        kept = api(cls, "the turn as stored", "GET", f"/agent-responses/{execution}", status_in(200))
        if kept is not None:
            stored.append(f"{len(kept.content) / 1e6:.2f}")
    api.ledger.note(cls, f"turns of {turn:,} characters: statuses {statuses}; each turn as stored (its JSON from "
                         f"GET /agent-responses/{{id}}, MB): {', '.join(stored)}")  # fmt: skip
    other = api(cls, "other tenant's conversation", "POST", chat_path(srv.other_agent_id), status_in(200),
                token=srv.other_token, json={"messages": HELLO})  # fmt: skip
    if other is not None and other.status_code == 200:
        foreign = other.json()["agent_response"]["id"]
        api(cls, "continue another workspace's conversation", "POST", path,
            json={"messages": HELLO, "root_id": foreign})  # fmt: skip


# --- 7/8/9. crafted inputs ----------------------------------------------------------------------------


def deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def crafted(api: Api, srv: Server, watch: Watch) -> None:
    watch.phase = "7-9 crafted inputs"
    chat = chat_path(srv.agent_id)
    execute = f"/agents/{srv.agent_id}/execute"
    cls = "7 integers and ids"
    corpus: list[tuple[str, str, Any, dict[str, str]]] = [
        ("GET", f"/agents/{BIG}", None, {}),
        ("GET", "/agents/99999999999999999999", None, {}),
        ("GET", "/agents/" + "9" * 5000, None, {}),
        ("GET", "/agents/²", None, {}),
        ("GET", "/agent-responses/" + BIG, None, {}),
        ("POST", chat_path(BIG), {"messages": HELLO}, {}),
        ("GET", "/agents", None, {"x-workspace-id": BIG}),
        ("GET", "/agents", None, {"x-workspace-id": "9" * 100_000}),
        ("GET", "/agents", None, {"x-workspace-id": "-1"}),
        ("GET", "/agents?page=" + "9" * 30, None, {}),
        ("GET", "/agents?page=²", None, {}),
        ("GET", "/agents?page=-1", None, {}),
        ("GET", "/agents?per_page=" + BIG, None, {}),
        ("GET", "/agent-responses?agent_id=99999999999999999999", None, {}),
        ("GET", "/agent-responses?root_id=²", None, {}),
        ("GET", "/agent-responses?root_id=" + BIG, None, {}),
        ("POST", "/tokens", {"rpm_limit": 2**63}, {}),
        ("POST", "/tokens", {"concurrency_limit": 2**64}, {}),
        ("POST", "/tokens", {"rpm_limit": 10**400}, {}),
        ("POST", "/tokens", {"expires_in_days": 3e6}, {}),
        ("POST", "/tokens", {"expires_in_days": 1e308}, {}),
        ("PATCH", "/tokens/" + BIG, {"name": "x"}, {}),
        ("POST", chat, {"messages": HELLO, "root_id": 99999999999999999999}, {}),
        ("POST", chat, {"messages": HELLO, "root_id": "²"}, {}),
        ("POST", chat, {"messages": HELLO, "root_id": -1}, {}),
        ("POST", chat, '{"messages": [{"role": "user", "content": "Hello"}], "temperature": 1e400}', {}),
        ("POST", "/tokens", '{"expires_in_days": 1e400}', {}),
        ("POST", chat, {"messages": HELLO, "max_tokens": 2**64}, {}),
        ("POST", execute, {"messages": HELLO, "root_id": BIG}, {}),
    ]
    for method, path, body, headers in corpus:
        shown = body if isinstance(body, str) else json.dumps(body) if body else ""
        if isinstance(body, str):  # JSON that Python would not write (1e400)
            json_headers = {**headers, "content-type": "application/json"}
            kwargs: dict[str, Any] = {"content": body.encode(), "headers": json_headers}
        else:
            kwargs = {"json": body, "headers": headers}
        api(cls, f"{method} {path[:60]} {shown[:60]} {str(headers)[:60]}".strip(), method, path, **kwargs)
    # a header value that is not ASCII
    api(cls, "x-workspace-id: ²", "GET", "/agents", headers={"x-workspace-id": "²".encode()})
    cls = "8 shapes"
    array_agent = make_agent(api, cls, "array field", "Hello", [{"type": "array", "name": "items"}])
    for what, path, body in [
        ("a list as a message role", chat, {"messages": [{"role": ["user"], "content": "x"}]}),
        ("an object as a message role", chat, {"messages": [{"role": {}, "content": "x"}]}),
        ("a list as a message role (/execute)", execute, {"messages": [{"role": ["user"], "content": "x"}]}),
        ("content nested 300 deep", chat, {"messages": [{"role": "user", "content": deep(300)}]}),
        ("messages not a list", chat, {"messages": "hi"}),
        ("a message that is a number", chat, {"messages": [1]}),
        ("10,001 messages", chat, {"messages": HELLO * 10_001}),
        ("an array field nested 300 deep", f"/agents/{array_agent}/execute", {"messages": HELLO, "items": deep(300)}),
        ("an array field nested 300 deep (OpenAI route)", chat_path(array_agent or 0),
         {"messages": HELLO, "items": deep(300)}),
    ]:  # fmt: skip
        api(cls, what, "POST", path, json=body)
    as_json = {"content-type": "application/json"}
    api(cls, "JSON nested 100,000 deep", "POST", chat, content=b"[" * 100_000 + b"]" * 100_000, headers=as_json)
    api(cls, "a body that is not JSON", "POST", chat, content=b"\xff\xfe{", headers=as_json)
    surrogate = b'{"messages":[{"role":"user","content":"\\ud800"}]}'
    api(cls, "a lone surrogate in a message", "POST", chat, lambda r: r.status_code < 500, content=surrogate,
        headers=as_json)  # fmt: skip
    cls = "9 routes and smaller items"
    api(cls, "Unicode digit as an agent id (٣)", "POST", chat_path("٣"), json={"messages": HELLO})
    api(cls, "%2f in place of a slash", "GET", "/agents%2f1", raw_path=f"/agents%2f{srv.agent_id}".encode())
    encoded = f"/agents%2F{srv.agent_id}/openai/chat/completions".encode()
    api(cls, "%2F in the chat route", "POST", "/x", raw_path=encoded, json={"messages": HELLO})
    not_allowed = api(cls, "405 names what is allowed", "DELETE", "/agent-responses",
                      lambda r: r.status_code == 405 and bool(r.headers.get("allow")))  # fmt: skip
    if not_allowed is not None:
        allow = not_allowed.headers.get("allow")
        api.ledger.note(cls, f"DELETE /agent-responses: {not_allowed.status_code}, Allow: {allow}")
    host = api(cls, "Host header reflected in page links?", "GET", "/agents", headers={"Host": "evil.example"},
               expect=lambda r: r.status_code == 200 and "evil.example" not in r.text)  # fmt: skip
    del host
    dead = make_agent(api, cls, "model whose upstream is down", "Hello", [], model="dead")
    if dead is not None:
        port = srv.url.rsplit(":", 1)[1]
        api(cls, "502 names no internal address", "POST", chat_path(dead), json={"messages": HELLO},
            expect=lambda r: r.status_code == 502 and "127.0.0.1" not in r.text and port not in r.text,
            designed_5xx=True)  # fmt: skip
    spec = {"title": "Inactive", "instructions": "Hi", "questions": [MODEL_Q], "active": False}
    inactive = api(cls, "save an inactive agent", "POST", "/agents", status_in(201), json=spec)
    if inactive is not None and inactive.status_code == 201:
        api(cls, "call an inactive agent", "POST", chat_path(inactive.json()["id"]), json={"messages": HELLO})


def id_timing(api: Api, srv: Server, plan: Plan, watch: Watch) -> None:
    """Does the answer time tell a foreign agent id from a missing one?"""
    cls = "9 routes and smaller items"
    watch.phase = "9 id timing"
    foreign: list[float] = []
    missing: list[float] = []
    for _ in range(plan.timing_samples):
        for agent_id, out in ((srv.other_agent_id, foreign), (10**9 + 7, missing)):
            resp = api(cls, "timing: a foreign or a missing agent id", "POST", chat_path(agent_id), status_in(404),
                       json={"messages": HELLO})  # fmt: skip
            if resp is not None:
                out.append(resp.elapsed.total_seconds() * 1000)
    if foreign and missing:
        f, m = statistics.median(foreign), statistics.median(missing)
        api.ledger.note(cls, f"another workspace's agent id answers 404 in p50 {f:.2f} ms, a missing id in p50 "
                             f"{m:.2f} ms (n={len(foreign)} each)")  # fmt: skip


# --- abruptly closed streams -------------------------------------------------------------------------


async def _abrupt(srv: Server, agent_id: int, count: int, ledger: Ledger) -> Counter[str]:
    url = srv.url + chat_path(agent_id)
    body = json.dumps({"messages": HELLO, "stream": True}).encode()
    headers = {"Authorization": f"Bearer {srv.token}", "Content-Type": "application/json"}
    seen: Counter[str] = Counter()
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one() -> None:
            async with sem:
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        status = resp.status
                        detail = ""
                        if status == 200:
                            await resp.content.readany()  # one chunk, then hang up
                        else:
                            detail = (await resp.read())[:300].decode("utf-8", "replace")
                        resp.close()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    seen["no answer"] += 1
                    ledger.add(Call("abrupt streams", "stream, one chunk, hang up", "POST", chat_path(agent_id),
                                    None, f"{type(exc).__name__}: {exc}", False))  # fmt: skip
                    return
                seen[str(status)] += 1
                ledger.add(Call("abrupt streams", "stream, one chunk, hang up", "POST", chat_path(agent_id),
                                status, detail, status == 200))  # fmt: skip

        await asyncio.gather(*(one() for _ in range(count)))
    return seen


def executions_by_status(api: Api, token: str) -> dict[str, int]:
    out = {}
    for status in ("starting", "running", "succeeded", "failed", "cancelled"):
        resp = api("executions", f"count {status}", "GET", f"/agent-responses?status={status}&per_page=1",
                   status_in(200), token=token)  # fmt: skip
        out[status] = int(resp.json()["total"]) if resp is not None and resp.status_code == 200 else -1
    return out


def abrupt_streams(api: Api, srv: Server, plan: Plan, watch: Watch) -> None:
    """Streams opened, one chunk read, the connection closed: on the fast upstream (whose whole
    answer is sent at once, so most runs end before the hang-up is seen) and on a slow one (40
    events 50 ms apart: the hang-up lands mid-run)."""
    cls = "abrupt streams"
    watch.phase = cls
    slow = make_agent(api, cls, "on a slow upstream", "Hello", [], model="slow")
    for what, agent in (("fast upstream", srv.agent_id), ("slow upstream", slow)):
        if agent is None:
            continue
        before = executions_by_status(api, srv.token)
        seen = asyncio.run(_abrupt(srv, agent, plan.abrupt_streams, api.ledger))
        deadline = time.monotonic() + 30
        while True:  # until the runs are over (their ends are stored a little after the hang-up)
            after = executions_by_status(api, srv.token)
            if not (after["running"] or after["starting"]) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        diff = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        api.ledger.note(cls, f"{what}: {plan.abrupt_streams} streams opened, one chunk read, connection closed: "
                             f"answers {dict(seen)}; the executions they made, by status: {diff}")  # fmt: skip


# --- the report --------------------------------------------------------------------------------------


def status_class(status: int | None) -> str:
    return "no answer" if status is None else f"{status // 100}xx"


def counts(values: Counter[str]) -> str:
    return ", ".join(f"{k} ×{v:,}" for k, v in sorted(values.items())) or "—"


def log_levels(path: Path) -> tuple[Counter[str], Counter[str]]:
    """The server log's lines by level, and its warnings and errors grouped by what they say."""
    levels: Counter[str] = Counter()
    said: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        level = str(record.get("level", "?")).lower()
        levels[level] += 1
        if level in ("warning", "error", "critical"):
            exc = str(record.get("exc", "")).strip().splitlines()
            text = f"{level} {record.get('logger')}: {record.get('msg')}"
            if record.get("msg") == "request":  # an access line: its route and status
                text += f" {record.get('method')} {record.get('route')} → {record.get('status')}"
            said[text + (f" — {exc[-1]}" if exc else "")] += 1
    return levels, said


def server_5xx(srv: Server) -> Counter[str]:
    """The server's own count of 5xx answers (opentess_requests_total), by route, method and status:
    it includes answers no client saw (written to a connection already closed)."""
    found: Counter[str] = Counter()
    try:
        text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    except httpx.HTTPError as exc:
        found[f"/metrics unreadable: {exc}"] += 1
        return found
    for line in text.splitlines():
        if line.startswith("opentess_requests_total{") and 'status="5' in line:
            labels, value = line.rsplit(" ", 1)
            if float(value):
                found[labels.removeprefix("opentess_requests_total")] += int(float(value))
    return found


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


@dataclass
class Pass:
    load_s: float
    stuck: dict[str, int]
    settled_in: float
    still: list[str]
    rss: tuple[int, int]  # settle_s after the load


def settle(api: Api, srv: Server, plan: Plan, watch: Watch, load_s: float) -> Pass:
    """Wait until no execution is starting or running (at most 30 s), then until settle_s after
    the load; the executions still unfinished and the RSS then."""
    watch.phase = "settling"
    started = time.monotonic()
    while True:
        stuck = {}
        for name, token in (("attacker", srv.token), ("other", srv.other_token)):
            found = executions_by_status(api, token)
            for status in ("starting", "running"):
                if found[status]:
                    stuck[f"{name} workspace: {status}"] = found[status]
        if not stuck or time.monotonic() - started > 30:
            break
        time.sleep(1)
    settled_in = time.monotonic() - started
    still = []
    if stuck:
        for token in (srv.token, srv.other_token):
            for status in ("starting", "running"):
                resp = api("executions", f"list {status}", "GET", f"/agent-responses?status={status}&per_page=100",
                           status_in(200), token=token)  # fmt: skip
                if resp is not None and resp.status_code == 200:
                    still += [f"#{e['id']} {status}, agent {e.get('agent_id')}, created {e.get('created_at')}"
                              for e in resp.json()["data"]]  # fmt: skip
    time.sleep(max(0.0, plan.settle_s - (time.monotonic() - started)))
    return Pass(load_s, stuck, settled_in, still, rss_split(srv.pid))


def run(plan: Plan, server_env: dict[str, str]) -> str:
    lines: list[str] = []
    ledger = Ledger()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # this client opens thousands of connections
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    slow = SlowUpstream()
    slow.start()
    slow.ready.wait(10)
    with targets.fake_upstream() as (upstream, _), server(upstream, slow.url, server_env) as srv:
        api = Api(srv, ledger)
        target = load.Target("opentess", srv.url + chat_path(srv.agent_id), {"Authorization": f"Bearer {srv.token}"})
        cold = rss_split(srv.pid)
        if failed := load.requests(target, 200):
            raise RuntimeError(f"{failed} of 200 warm-up requests failed")
        start = rss_split(srv.pid)
        disk_start = dir_bytes(srv.data_dir)
        watch = Watch(srv)
        watch.start()
        passes: list[Pass] = []
        conns: list[ConnResult] = []
        for n in range(plan.passes):
            watch.prefix = ledger.prefix = f"pass {n + 1}: " if plan.passes > 1 else ""
            began = time.monotonic()
            hostile_templates(api, srv, plan, watch)
            distinct_values(api, srv, plan, watch)
            for conn in connections(srv, plan, watch, ledger):
                conn.kind = watch.prefix + conn.kind
                conns.append(conn)
            tokens(api, srv, watch)
            conversations(api, srv, plan, watch)
            crafted(api, srv, watch)
            id_timing(api, srv, plan, watch)
            abrupt_streams(api, srv, plan, watch)
            passes.append(settle(api, srv, plan, watch, time.monotonic() - began))
        disk_end = dir_bytes(srv.data_dir)
        watch.stopping.set()
        watch.join()
        api.close()
        own_5xx = server_5xx(srv)
        levels, said = log_levels(srv.log)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # --- report
    first, last = passes[0], passes[-1]
    calls = ledger.calls
    by_class: Counter[str] = Counter(status_class(c.status) for c in calls)
    five = [c for c in calls if c.status is not None and c.status >= 500 and not (c.designed_5xx and c.as_designed)]
    designed = [c for c in calls if c.status is not None and c.status >= 500 and c.designed_5xx and c.as_designed]
    unanswered = [c for c in calls if c.status is None]
    not_designed = [c for c in calls if not c.as_designed and c not in five]
    refused_503 = sum(c.outcomes.get("503 and closed", 0) for c in conns)
    raw_5xx = Counter(
        {k: v for c in conns for k, v in c.outcomes.items() if k[:1] == "5" and not k.startswith("503 and closed")}
    )
    lines += [
        f"# opentess under attack — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit or '?'}",
        "",
        f"Replay of the attack classes of issue #11 against one `opentess serve` (embedded SQLite, default "
        f"limits, fake upstream), {'--quick' if plan == QUICK else 'full'} plan; {len(passes)} pass(es) of every "
        f"class, load {' + '.join(f'{p.load_s:.0f}' for p in passes)} s. "
        "A thread asked `GET /healthz` on a fresh connection every ~100 ms throughout.",
        "",
        "## Summary",
        "",
        "| measure | value |",
        "|---|---|",
        f"| HTTP requests made by the attacks | {len(calls):,} |",
        f"| answers by status class | {counts(by_class)} |",
        f"| server errors (5xx) | {len(five) + sum(raw_5xx.values())} |",
        f"| requests without an HTTP answer | {len(unanswered)} |",
        f"| answers not as designed (no 5xx, but not the expected answer) | {len(not_designed)} |",
        f"| designed 5xx: the connection cap's 503 refusals; 502 for a model whose upstream is down | "
        f"{refused_503:,}; {len(designed)} |",
        f"| stuck executions (starting/running once settled, {last.settled_in:.0f} s after the load) | "
        f"{sum(last.stuck.values())} |",
        f"| /healthz polls / failed | {sum(watch.polls.values()):,} / {sum(watch.failures.values())} |",
        f"| 5xx in the server's own metrics (designed ones, and answers no client received, included) | "
        f"{sum(own_5xx.values())} |",
        f"| server log lines by level | {counts(levels)} |",
        "",
        "## Memory and disk",
        "",
        "| when | server process | + template renderers | total |",
        "|---|---|---|---|",
        f"| started, before warm-up | {mib(cold[0])} | {mib(cold[1])} | {mib(sum(cold))} |",
        f"| start (after 200 warm-up requests) | {mib(start[0])} | {mib(start[1])} | {mib(sum(start))} |",
        f"| peak during the attacks | {mib(watch.peak[0])} | {mib(watch.peak[1])} | {mib(sum(watch.peak))} |",
        *(
            f"| {plan.settle_s:.0f} s after the load of pass {i + 1} ended | {mib(p.rss[0])} | {mib(p.rss[1])} | "
            f"{mib(sum(p.rss))} |"
            for i, p in enumerate(passes)
        ),
        "",
        f"End of pass 1 against start: server process {(first.rss[0] / start[0] - 1) * 100:+.1f}%, total "
        f"{(sum(first.rss) / sum(start) - 1) * 100:+.1f}% (target: within 10%)."
        + (
            f" Pass {len(passes)} against pass 1: server process {(last.rss[0] / first.rss[0] - 1) * 100:+.1f}% "
            "(the same attacks again: growth here would be a leak; none means what pass 1 added is kept for "
            "reuse, a high-water mark)."
            if len(passes) > 1
            else ""
        )
        + f" Data dir {disk_start / 1e6:.1f} → {disk_end / 1e6:.1f} MB.",
        "",
        "## By attack class",
        "",
        "| class | requests | answers | not as designed |",
        "|---|---|---|---|",
    ]
    classes = list(dict.fromkeys(c.cls for c in calls))
    for cls in classes:
        mine = [c for c in calls if c.cls == cls]
        statuses = Counter(str(c.status) if c.status is not None else "no answer" for c in mine)
        lines.append(f"| {cls} | {len(mine):,} | {counts(statuses)} | {sum(not c.as_designed for c in mine)} |")
    lines += ["", "### What was measured", ""]
    for cls, notes in ledger.notes.items():
        for note in notes:
            lines.append(f"- **{cls}**: {note}")
    lines += [
        "",
        "### Connections (raw sockets, no HTTP client)",
        "",
        "| attack | connections | outcome | time to the server's answer and close |",
        "|---|---|---|---|",
    ]
    for conn in conns:
        total = sum(conn.outcomes.values())
        timing = conn.timing or "—"
        if conn.times:
            timing = f"p50 {statistics.median(conn.times):.1f} s, max {max(conn.times):.1f} s"
        lines.append(f"| {conn.kind} | {total:,} | {counts(conn.outcomes)} | {timing} |")
    lines += ["", "### /healthz and RSS by phase", "",
              "| phase | polls | failed | refused by the cap (503) | latency | RSS at its end: server + renderers |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for phase, polls in watch.polls.items():
        sample = f" (`{watch.failure_samples[phase][:100]}`)" if phase in watch.failure_samples else ""
        own, children = watch.last_rss[phase]
        lines.append(
            f"| {phase} | {polls:,} | {watch.failures[phase]}{sample} | {watch.refused[phase]} | "
            f"{ms(watch.latency.get(phase, []))} | {mib(own)} + {mib(children)} |"
        )
    lines += ["", "## Every 5xx", ""]
    if not five and not raw_5xx:
        lines.append("No client received a 5xx other than the designed ones counted in the summary.")
    for c in five:
        lines.append(f"- **{c.status}** — {c.cls}: {c.what} — `{c.method} {c.path}` → `{c.detail[:200]}`")
    for k, v in raw_5xx.items():
        lines.append(f"- raw connections: {k} ×{v}")
    if own_5xx:
        lines += ["", "The server's own count of 5xx answers (`opentess_requests_total`), by route and status: it "
                  "includes the designed 502s, and answers that no client received (written to a connection "
                  "already closed):", ""]  # fmt: skip
        lines += [f"- `{labels}` ×{n}" for labels, n in own_5xx.items()]
    lines += ["", "## Answers not as designed, and requests without an answer", ""]
    if not not_designed:
        lines.append("None.")
    for c in not_designed[:60]:
        lines.append(f"- {c.cls}: {c.what} — `{c.method} {c.path}` → {c.status}: `{c.detail[:200]}`")
    if len(not_designed) > 60:
        lines.append(f"- … and {len(not_designed) - 60} more")
    for i, p in enumerate(passes):
        if p.stuck:
            lines += ["", f"## Stuck executions after pass {i + 1}", "", f"{p.stuck}", *(f"- {s}" for s in p.still)]
    if said:
        lines += ["", "## Server log: warnings and errors, grouped", ""]
        for text, n in said.most_common(25):
            lines.append(f"- ×{n}: `{text[:300]}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a small version of every class (checks the harness)")
    parser.add_argument("--output", help="also write the report to this file")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable of the server only (a limit, a malloc tunable)")  # fmt: skip
    args = parser.parse_args(argv)
    server_env = dict(item.split("=", 1) for item in args.server_env)
    report = run(QUICK if args.quick else Plan(), server_env)
    print(report)
    if args.output:
        Path(args.output).write_text(report)


if __name__ == "__main__":
    main()
