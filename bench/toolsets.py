"""The grounded path's own cost (issue #16): a search, then the top results' pages fetched
concurrently and their main text extracted — through opentess's SearXNG backend and guarded
fetcher — against the same requests made by a bare httpx client (the fetches themselves), on a
fake search engine and fake pages that answer in ~0 ms. The difference is what the toolsets add
to a grounded run beyond its fetches (target: at most 15 ms p50 with 3 pages).

Both sides run in this process, in turns (each round starting with the other side), so the
machine's drift falls on both alike; the fake runs in a process of its own.

    python -m bench.toolsets [--pages 3] [--rounds 200] [--quick]    (or scripts/bench --toolsets)
    python -m bench.toolsets serve PORT                              (the fake alone)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
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


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        uvloop.run(serve(int(argv[1])))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.toolsets", description=__doc__)
    parser.add_argument("--pages", type=int, default=3, help=f"pages read per search (at most {MAX_PAGES})")
    parser.add_argument("--rounds", type=int, default=200, help="measured rounds per side")
    parser.add_argument("--quick", action="store_true", help="20 rounds: checks the harness, not speed")
    args = parser.parse_args(argv)
    args.pages = min(max(args.pages, 1), MAX_PAGES)
    print(report(args))


if __name__ == "__main__":
    main()
