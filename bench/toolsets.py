"""The grounded path's own cost (issue #16): a search, then the top results' pages fetched
concurrently and their main text extracted — through opentess's SearXNG backend and guarded
fetcher — against the same requests made by a bare httpx client (the fetches themselves), on a
fake search engine and fake pages that answer in ~0 ms. The difference is what the toolsets add
to a grounded run beyond its fetches (target: at most 15 ms p50 with 3 pages).

Both sides run in this process, in turns (each round starting with the other side), so the
machine's drift falls on both alike; the fake runs in a process of its own.

Then whole runs through an opentess server (a process of its own, SQLite): a grounded
``internet`` run against a ``no-tools`` run of the same agent (what grounding adds to a run,
less the fetches measured alone), and ``agent`` runs of 0 and 10 tool steps against a fake
upstream that calls the calculator as often as the message asks (a step's whole cost, its
model call included, bounds the loop's overhead per step: target at most 2 ms).

    python -m bench.toolsets [--pages 3] [--rounds 200] [--quick]    (or scripts/bench --toolsets)
    python -m bench.toolsets serve PORT                              (the fake web alone)
    python -m bench.toolsets upstream PORT                           (the tool-calling fake upstream)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httptools
import httpx
import uvloop

from bench import targets
from opentess.toolsets.search import SearchConfig, make_search_backend
from opentess.toolsets.web import Fetcher, extract

MAX_PAGES = 10
QUERY = "lighthouse of alexandria"
SENTENCES = [
    "The Lighthouse of Alexandria was built by the Ptolemaic Kingdom during the reign of Ptolemy II.",
    "Its light, a fire reflected by bronze mirrors, guided ships into the harbour at night.",
    "Earthquakes between 956 and 1323 damaged it, and its stones went into the Citadel of Qaitbay.",
    "Travellers described three tiers: a square base, an octagonal middle and a cylindrical top.",
    "For many centuries it was one of the tallest structures made by human hands.",
]


def article(n: int) -> bytes:
    """A ~6 kB news-like page: the article (~3.5 kB of text) inside navigation, a cookie banner,
    a sidebar, a script and a footer — the kind of page trafilatura is there to read."""
    paragraphs = "\n".join(
        f"<p>{' '.join(SENTENCES[(n + i + j) % len(SENTENCES)] for j in range(3))} (page {n}, part {i})</p>"
        for i in range(12)
    )
    links = "".join(f'<li><a href="/story/{n}-{i}">Related story number {i} about wonders</a></li>' for i in range(25))
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Wonder {n}: the Lighthouse of Alexandria | Wonders Weekly</title>
<script>window.analytics = {{"page": {n}, "tags": ["history", "wonders"]}};</script>
<style>body {{ font-family: sans-serif; }} .cookie {{ position: fixed; }}</style></head><body>
<div class="cookie">We use cookies to improve your experience. <button>Accept all cookies</button></div>
<header><nav><a href="/">Home</a> <a href="/news">News</a> <a href="/about">About us</a></nav></header>
<main><article><h1>Wonder {n}: the Lighthouse of Alexandria</h1>
<p class="byline">By A. Writer, 3 March 2024</p>
{paragraphs}
</article></main>
<aside><h3>Related stories</h3><ul>{links}</ul></aside>
<footer><p>Copyright 2024 Wonders Weekly. All rights reserved.</p></footer></body></html>"""
    return page.encode()


def _response(content_type: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class _Protocol(asyncio.Protocol):
    """Answers prepared once: /search (SearXNG's JSON) and /page/N (an article)."""

    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.answers = answers
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's TCPTransport is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0]
        answer = self.answers.get(path)
        if answer is None:
            answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        self.transport.write(answer)


async def serve(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    results = [
        {"url": f"{base}/page/{n}", "title": f"Wonder {n}", "content": f"The <b>lighthouse</b>, page {n}"}
        for n in range(MAX_PAGES)
    ]
    search = json.dumps({"query": QUERY, "number_of_results": len(results), "results": results}).encode()
    answers = {b"/search": _response("application/json", search)}
    for n in range(MAX_PAGES):
        answers[f"/page/{n}".encode()] = _response("text/html; charset=utf-8", article(n))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Protocol(answers), "127.0.0.1", port, backlog=1024)
    print(f"fake search and pages on {port}", flush=True)
    async with server:
        await server.serve_forever()


# measuring ----------------------------------------------------------------------------------------


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(base: str, pages: int, rounds: int) -> dict[str, list[float]]:
    direct = httpx.AsyncClient(trust_env=False, timeout=10)
    backend = make_search_backend(SearchConfig("searxng", base_url=base))
    fetcher = Fetcher(allow_hosts=[base.removeprefix("http://")])

    async def bare() -> None:
        answer = await direct.get(f"{base}/search", params={"q": QUERY, "format": "json"})
        urls = [r["url"] for r in answer.json()["results"][:pages]]
        bodies = await asyncio.gather(*(direct.get(url) for url in urls))
        assert all(b.status_code == 200 and b.content for b in bodies)

    async def grounded() -> None:
        results = await backend.search(QUERY, count=pages)
        found = await asyncio.gather(*(fetcher.fetch(r.url) for r in results))
        assert len(found) == pages and all("Lighthouse" in p.text for p in found)

    sides: dict[str, Callable[[], Awaitable[None]]] = {"bare httpx": bare, "opentess": grounded}
    samples: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for _ in range(max(rounds // 10, 5)):  # warm-up: pools, imports, trafilatura's first call
            await bare()
            await grounded()
        names = list(sides)
        for i in range(rounds):
            for name in names[i % 2 :] + names[: i % 2]:
                began = time.perf_counter()
                await sides[name]()
                samples[name].append((time.perf_counter() - began) * 1000)
    finally:
        await direct.aclose()
        await backend.aclose()
        await fetcher.aclose()
    return samples


def _extraction_ms(pages: int, rounds: int) -> list[float]:
    """The CPU part alone: extracting ``pages`` articles one after the other in one thread."""
    bodies = [article(n) for n in range(pages)]
    samples = []
    for _ in range(max(rounds // 4, 5)):
        began = time.perf_counter()
        for body in bodies:
            extract("html", body, "utf-8", 20_000)
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def report(args: argparse.Namespace) -> str:
    pages = getattr(args, "pages", 3)
    rounds = 20 if args.quick else getattr(args, "rounds", 200)
    port = targets.free_port()
    ready = f"http://127.0.0.1:{port}/search"
    with targets.process([sys.executable, "-m", "bench.toolsets", "serve", str(port)], ready):
        samples = uvloop.run(_measure(f"http://127.0.0.1:{port}", pages, rounds))
    extraction = _extraction_ms(pages, rounds)
    bare, ours = samples["bare httpx"], samples["opentess"]
    added = statistics.median(ours) - statistics.median(bare)
    lines = [
        f"### Toolsets: search + {pages} pages fetched concurrently + main text",
        "",
        "| path | p50 (ms) | p95 (ms) |",
        "|---|---|---|",
        f"| bare httpx: the search and page requests alone | {_ms(bare, 0.5):.2f} | {_ms(bare, 0.95):.2f} |",
        f"| opentess: SearXNG backend + guarded fetcher + extraction | {_ms(ours, 0.5):.2f} | {_ms(ours, 0.95):.2f} |",
        f"| of which extraction of the {pages} pages (one thread, measured alone) | {_ms(extraction, 0.5):.2f} "
        f"| {_ms(extraction, 0.95):.2f} |",
        "",
        f"opentess / bare: {statistics.median(ours) / statistics.median(bare):.2f}× at p50; "
        f"added beyond the fetches themselves: {added:.2f} ms p50 (target: ≤ 15 ms). "
        f"{rounds} rounds per side, in turns; pages of {len(article(0)):,} bytes answered in ~0 ms.",
    ]
    return "\n".join(lines)


# whole runs through a server -----------------------------------------------------------------------

STEPS = 10  # tool steps of the measured agent runs
_STEPS = re.compile(rb"steps=(\d+)")
_TOOL_TURN = b'"role":"tool"'


def _json_answer(obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return _response("application/json", body)


_USAGE = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
ANSWER = _json_answer(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done."}, "finish_reason": "stop"}],
        "usage": _USAGE,
    }
)
CALL = _json_answer(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "calculator", "arguments": '{"expression":"6*7"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": _USAGE,
    }
)


class _Upstream(_Protocol):
    """An OpenAI-compatible upstream that calls the calculator until the conversation holds as
    many tool results as its message asks (``steps=N``), then answers; without tools, answers."""

    def on_message_begin(self) -> None:
        self.body: list[bytes] = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        raw = b"".join(self.body)
        wanted = _STEPS.search(raw)
        more = wanted is not None and b'"tools":[' in raw and raw.count(_TOOL_TURN) < int(wanted.group(1))
        self.transport.write(CALL if more else ANSWER)


async def serve_upstream(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Upstream({}), "127.0.0.1", port, backlog=1024)
    print(f"tool-calling fake upstream on {port}", flush=True)
    async with server:
        await server.serve_forever()


RUN_AGENT = """\
title: Toolsets bench
type: chat
instructions: "You answer questions about wonders."
questions:
  - {type: select, name: model, options: [bench]}
  - {type: select, name: tools, options: [no-tools, internet, agent]}
"""


@contextmanager
def _server(web: str, upstream: str, pages: int) -> Iterator[tuple[str, dict[str, str]]]:
    """opentess on SQLite with the fake web as its search backend and pages; (chat URL, headers)."""
    port = targets.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = targets.server_env(
            Path(tmp),
            targets.upstream_config(upstream) + "supports_tools = true\n\n"
            f'[search]\nprovider = "searxng"\nbase_url = "{web}"\nresults = {pages}\npages = {pages}\n',
        )
        env["OPENTESS_FETCH_ALLOW_HOSTS"] = web.removeprefix("http://")
        agent_file = Path(tmp) / "agent.yaml"
        agent_file.write_text(RUN_AGENT)
        email = f"toolsets-{port}@example.com"
        user = targets._cli(env, "users", "create", email)
        agent = targets._cli(
            env, "agents", "create", "--file", str(agent_file), "--workspace", str(user["default_workspace_id"])
        )
        token = targets._cli(env, "tokens", "create", "--user", email)
        args = [sys.executable, "-m", "opentess", "serve", "--port", str(port)]
        with targets.process(args, f"http://127.0.0.1:{port}/healthz", env):
            yield (
                f"http://127.0.0.1:{port}/agents/{agent['id']}/openai/chat/completions",
                {"Authorization": f"Bearer {token['token']}"},
            )


async def _measure_runs(
    chat: str, headers: dict[str, str], web: str, upstream: str, pages: int, rounds: int
) -> dict[str, list[float]]:
    client = httpx.AsyncClient(trust_env=False, timeout=60, headers=headers)
    direct = httpx.AsyncClient(trust_env=False, timeout=10)

    def run(tools: str, content: str = QUERY) -> Callable[[], Awaitable[None]]:
        body = {"messages": [{"role": "user", "content": content}], "tools": tools}

        async def call() -> None:
            answer = await client.post(chat, json=body)
            assert answer.status_code == 200, answer.text
            sources = answer.json()["agent_response"]["sources"]
            assert tools != "internet" or len(sources) == pages
            if tools == "agent":  # every step was a model call of 20 prompt tokens, and one more answered
                steps = int(content.removeprefix("steps="))
                assert answer.json()["usage"]["prompt_tokens"] == 20 * (steps + 1), answer.text

        return call

    async def fetches() -> None:
        answer = await direct.get(f"{web}/search", params={"q": QUERY, "format": "json"})
        urls = [r["url"] for r in answer.json()["results"][:pages]]
        await asyncio.gather(*(direct.get(url) for url in urls))

    sides: dict[str, Callable[[], Awaitable[None]]] = {
        "no-tools": run("no-tools"),
        "internet": run("internet"),
        "fetches alone": fetches,
        "agent, 0 steps": run("agent", "steps=0"),
        f"agent, {STEPS} steps": run("agent", f"steps={STEPS}"),
    }
    samples: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for _ in range(max(rounds // 10, 5)):
            for side in sides.values():
                await side()
        names = list(sides)
        for i in range(rounds):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                began = time.perf_counter()
                await sides[name]()
                samples[name].append((time.perf_counter() - began) * 1000)
    finally:
        await client.aclose()
        await direct.aclose()
    return samples


def report_runs(args: argparse.Namespace) -> str:
    pages = getattr(args, "pages", 3)
    rounds = 10 if args.quick else max(getattr(args, "rounds", 200) // 2, 20)
    web_port, upstream_port = targets.free_port(), targets.free_port()
    web, upstream = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{upstream_port}"
    with (
        targets.process([sys.executable, "-m", "bench.toolsets", "serve", str(web_port)], f"{web}/search"),
        targets.process(
            [sys.executable, "-m", "bench.toolsets", "upstream", str(upstream_port)], f"{upstream}/v1/models"
        ),
        _server(web, upstream, pages) as (chat, headers),
    ):
        samples = uvloop.run(_measure_runs(chat, headers, web, upstream, pages, rounds))
    p50 = {name: statistics.median(values) for name, values in samples.items()}
    grounded = p50["internet"] - p50["no-tools"]
    beyond = grounded - p50["fetches alone"]
    per_step = (p50[f"agent, {STEPS} steps"] - p50["agent, 0 steps"]) / STEPS
    rows = [f"| {name} | {_ms(values, 0.5):.2f} | {_ms(values, 0.95):.2f} |" for name, values in samples.items()]
    return "\n".join(
        [
            f"### Toolsets: whole runs through the server (non-streaming, {rounds} rounds per kind, in turns)",
            "",
            "| run | p50 (ms) | p95 (ms) |",
            "|---|---|---|",
            *rows,
            "",
            f"A grounded `internet` run ({pages} pages) adds {grounded:.2f} ms p50 to a `no-tools` run; beyond its "
            f"fetches ({p50['fetches alone']:.2f} ms alone): {beyond:.2f} ms (target: ≤ 15 ms).",
            f"An `agent` step costs {per_step:.2f} ms p50 in all — its model call to the fake upstream and its "
            "calculator call included, so the loop's own overhead is less (target: ≤ 2 ms per step).",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        uvloop.run(serve(int(argv[1])))
        return
    if argv[:1] == ["upstream"]:
        uvloop.run(serve_upstream(int(argv[1])))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.toolsets", description=__doc__)
    parser.add_argument("--pages", type=int, default=3, help=f"pages read per search (at most {MAX_PAGES})")
    parser.add_argument("--rounds", type=int, default=200, help="measured rounds per side")
    parser.add_argument("--quick", action="store_true", help="20 rounds: checks the harness, not speed")
    args = parser.parse_args(argv)
    args.pages = min(max(args.pages, 1), MAX_PAGES)
    print(report(args))
    print()
    print(report_runs(args))


if __name__ == "__main__":
    main()
