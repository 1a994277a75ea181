"""The embedded model: opentess streaming SmolLM2 over HTTP against llama-cpp-python in process
and (with --with-llama-server) llama.cpp's own llama-server on the same GGUF and threads."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import targets
from opentess.providers.local import LocalSettings, _Loaded, repack_weights, smollm2_path

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank. "
STORY = "Write a long, detailed story about a lighthouse keeper and a storm."
LLAMA_SERVER = targets.ROOT / "bench" / ".llama-server" / "llama-server"


def messages(text: str) -> list[dict[str, str]]:
    """What opentess sends the model for ``text`` (the bench agent's instructions as the system
    message), so that every runner evaluates the same tokens."""
    return [{"role": "system", "content": targets.LOCAL_INSTRUCTIONS}, {"role": "user", "content": text}]


def prompt(words: int) -> str:
    filler = (SENTENCE * (words // 14 + 1)).split()[:words]
    return " ".join(filler) + "\n\n" + STORY


@dataclass
class Sample:
    ttft_ms: float
    tokens: int
    decode_tps: float  # tokens per second after the first


def in_process(loaded: _Loaded, text: str, max_tokens: int) -> Sample:
    tokens, stops = loaded.prompt(messages(text))
    started = time.perf_counter()
    first = last = 0.0
    parts = []
    for chunk in loaded.llm.create_completion(tokens, max_tokens=max_tokens, stop=stops, stream=True, temperature=0,
                                              seed=1):  # fmt: skip
        piece = chunk["choices"][0]["text"]
        if piece:
            now = time.perf_counter()
            first = first or now
            last = now
            parts.append(piece)
    text_out = "".join(parts)
    n = len(loaded.llm.tokenize(text_out.encode(), add_bos=False, special=False)) if text_out else 0
    return Sample((first - started) * 1000, n, (n - 1) / (last - first) if last > first else float("nan"))


@dataclass
class _Read:
    first: float = 0.0
    last: float = 0.0
    tokens: int = 0
    finished: bool = False


async def _read(resp: aiohttp.ClientResponse) -> _Read:
    """Consume an OpenAI stream: when its first and last text arrived, usage, whether it ended."""
    read = _Read()
    async for line in resp.content:
        if line.startswith(b"data: [DONE]"):
            read.finished = True
        if not line.startswith(b"data: {"):
            continue
        event = orjson.loads(line[6:])
        if event.get("usage"):
            read.tokens = event["usage"]["completion_tokens"]
        for choice in event.get("choices") or ():
            if (choice.get("delta") or {}).get("content"):
                read.last = time.perf_counter()
                read.first = read.first or read.last
    return read


async def _http_stream(
    url: str, headers: dict[str, str], text: str, max_tokens: int, model: str, add_system: bool
) -> Sample:
    # opentess adds the agent's instructions itself; llama-server is sent the same system message
    sent = messages(text) if add_system else [{"role": "user", "content": text}]
    body = orjson.dumps(
        {"model": model, "messages": sent, "max_tokens": max_tokens, "stream": True,
         "temperature": 0, "seed": 1, "stream_options": {"include_usage": True}}
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as resp:
            r = await _read(resp)
    rate = (r.tokens - 1) / (r.last - r.first) if r.last > r.first else float("nan")
    return Sample((r.first - started) * 1000, r.tokens, rate)


def http_stream(
    url: str, headers: dict[str, str], text: str, max_tokens: int, model: str = "smollm2-135m", add_system: bool = False
) -> Sample:
    return asyncio.run(_http_stream(url, headers, text, max_tokens, model, add_system))


async def _concurrent(url: str, headers: dict[str, str], n: int, max_tokens: int) -> tuple[float, bool, bool]:
    """n streams sent 50 ms apart: (aggregate tokens/s, first tokens in arrival order, all complete)."""
    starts: list[float] = []
    results: list[tuple[float, int, bool]] = []

    async def one(i: int) -> None:
        await asyncio.sleep(i * 0.05)
        body = orjson.dumps({"messages": [{"role": "user", "content": f"{STORY} ({i})"}], "max_tokens": max_tokens,
                             "stream": True, "stream_options": {"include_usage": True}})  # fmt: skip
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as resp,
        ):
            r = await _read(resp)
        results.append((r.first, r.tokens, r.finished))
        starts.append(i)

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - began
    firsts = sorted(range(n), key=lambda i: results[starts.index(i)][0])
    return sum(r[1] for r in results) / wall, firsts == list(range(n)), all(r[2] for r in results)


@contextmanager
def llama_server() -> Iterator[tuple[str, int] | None]:
    if not LLAMA_SERVER.exists():
        yield None
        return
    port = targets.free_port()
    args = [str(LLAMA_SERVER), "-m", str(smollm2_path()), "-t", str(os.cpu_count()), "--port", str(port),
            "-c", "2048", "--host", "127.0.0.1"]  # fmt: skip
    if not repack_weights(LocalSettings()):
        args.append("--no-repack")  # as opentess and the in-process runner load it
    with targets.process(args, f"http://127.0.0.1:{port}/health") as proc:
        yield f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid


def build_llama_server() -> None:
    """Build llama-server from the llama.cpp sources vendored in the llama-cpp-python sdist."""
    if LLAMA_SERVER.exists():
        return
    import importlib.metadata

    version = importlib.metadata.version("llama-cpp-python")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", tmp], check=True)  # fmt: skip
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = Path(tmp) / "build"
        subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF",
                        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"], check=True)  # fmt: skip
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count())],
                       check=True)  # fmt: skip
        LLAMA_SERVER.parent.mkdir(parents=True, exist_ok=True)
        (build / "bin" / "llama-server").rename(LLAMA_SERVER)


def _median(samples: list[Sample], attr: str) -> float:
    return float(statistics.median(float(getattr(s, attr)) for s in samples))


def report(args: argparse.Namespace) -> str:
    if getattr(args, "with_llama_server", False):
        build_llama_server()
    repeat = args.repeat
    max_tokens = 16 if args.quick else 128
    rows: dict[str, dict[str, Any]] = {}
    # Every run gets a prompt of its own, so that no runner answers from a cached prompt: the long
    # prompts are numbered after the short ones, or "Run 0. The quick brown fox…" would be a
    # 60-token prefix already evaluated, which llama-server (its slots keep earlier prompts) reuses
    # and llama-cpp-python (only the previous prompt) does not.
    prompts = {
        "60": [f"Run {i}. {prompt(43)}" for i in range(repeat)],
        "500": [f"Run {repeat + i}. {prompt(458)}" for i in range(repeat)],
    }
    # The runners take turns, prompt by prompt (each round starting with another runner), so that
    # the machine's drift over minutes falls on all of them alike rather than on whichever ran last.
    runners: dict[str, Callable[[str], Sample]] = {}
    loaded = _Loaded(smollm2_path(), LocalSettings())
    runners["in-process llama-cpp-python"] = lambda text: in_process(loaded, text, max_tokens)
    with contextlib.ExitStack() as stack:
        upstream, _ = stack.enter_context(targets.fake_upstream())
        target, _pid = stack.enter_context(targets.opentess(upstream))
        local = target.local_url
        runners["opentess (HTTP, SSE)"] = lambda text: http_stream(local, target.headers, text, max_tokens)
        try:
            server = stack.enter_context(llama_server())
        except RuntimeError as exc:  # a broken build must not lose the rest of the report
            print(f"llama-server did not start: {exc}", file=sys.stderr)
            server = None
        if server is not None:
            url = server[0]
            runners["llama-server (HTTP, SSE)"] = lambda text: http_stream(url, {}, text, max_tokens, add_system=True)
        # warm-up (opentess loads its model on first use): not part of any measurement
        in_process(loaded, "Hi", 4)
        http_stream(local, target.headers, "Hi", 4)
        if server is not None:
            http_stream(server[0], {}, "Hi", 4, add_system=True)
        names = list(runners)
        for label, texts in prompts.items():
            for i, text in enumerate(texts):
                for name in names[i % len(names) :] + names[: i % len(names)]:
                    rows.setdefault(name, {}).setdefault(label, []).append(runners[name](text))
        aggregate, fifo, complete = asyncio.run(_concurrent(local, target.headers, 4, max_tokens))
    single_e2e = statistics.median(
        s.tokens / (s.ttft_ms / 1000 + (s.tokens - 1) / s.decode_tps) for s in rows["in-process llama-cpp-python"]["60"]
    )
    lines = [
        f"### Embedded model (SmolLM2-135M Q4_1, {os.cpu_count()} threads, greedy, up to {max_tokens} tokens)",
        "",
        "| runner | TTFT ~60-token prompt (ms) | TTFT ~500-token prompt (ms) | decode tokens/s (60) "
        "| decode tokens/s (500) |",
        "|---|---|---|---|---|",
    ]
    for name, by_prompt in rows.items():
        lines.append(
            f"| {name} | {_median(by_prompt['60'], 'ttft_ms'):.1f} | {_median(by_prompt['500'], 'ttft_ms'):.1f} | "
            f"{_median(by_prompt['60'], 'decode_tps'):.1f} | {_median(by_prompt['500'], 'decode_tps'):.1f} |"
        )
    if "llama-server (HTTP, SSE)" not in rows:
        lines.append("| llama-server | not built (scripts/bench --with-model --with-llama-server) | | | |")
    o = rows["opentess (HTTP, SSE)"]
    p = rows["in-process llama-cpp-python"]
    single = _median(o["60"], "decode_tps")
    lines += [
        "",
        f"opentess / in-process decode rate: {single / _median(p['60'], 'decode_tps'):.2f}× (60-token prompt), "
        f"{_median(o['500'], 'decode_tps') / _median(p['500'], 'decode_tps'):.2f}× (500-token prompt).",
    ]
    if "llama-server (HTTP, SSE)" in rows:
        s = rows["llama-server (HTTP, SSE)"]
        lines.append(
            f"opentess / llama-server: decode {single / _median(s['60'], 'decode_tps'):.2f}×, "
            f"TTFT {_median(o['60'], 'ttft_ms') / _median(s['60'], 'ttft_ms'):.2f}× (60) and "
            f"{_median(o['500'], 'ttft_ms') / _median(s['500'], 'ttft_ms'):.2f}× (500)."
        )
    lines.append(
        f"4 concurrent streams through opentess: {aggregate:.1f} tokens/s in aggregate, "
        f"{aggregate / single_e2e:.2f}× one stream's end-to-end rate ({single_e2e:.1f} tokens/s, prompt included; "
        "generations take turns, so the aggregate can at best match it); "
        f"first tokens in arrival order: {'yes' if fifo else 'NO'}; "
        f"every stream complete: {'yes' if complete else 'NO'}."
    )
    return "\n".join(lines)
