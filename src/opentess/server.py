"""Running the app: one uvicorn server per process with a graceful SIGTERM, and a small supervisor
for ``--workers N`` whose children share one listening socket.

On SIGTERM a process stops accepting, lets running streams finish for ``shutdown_grace_s``, then
cancels what is left so that every client gets a clean final event and every execution is stored
``cancelled`` with its partial output; then it exits 0."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn

from opentess.connections import guarded_protocol, raise_open_files_limit
from opentess.executions.live import SHUTDOWN
from opentess.settings import Settings

log = logging.getLogger("opentess.server")
CHILD_FD_ENV = "OPENTESS_LISTEN_FD"


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, grace_s: float) -> None:
        super().__init__(config)
        self.grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._trimmer: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        tune_gc()
        state = self.server_state
        self._trimmer = asyncio.create_task(release_freed_memory(lambda: state.total_requests))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._trimmer is not None:
            self._trimmer.cancel()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if not self._draining and self._loop is not None:
            self._draining = True
            loop = self._loop
            loop.call_soon_threadsafe(lambda: loop.call_later(self.grace_s, self._cancel_runs))

    def _cancel_runs(self) -> None:
        app = self.config.app
        state = getattr(getattr(app, "state", None), "opentess", None)
        if state is not None:
            cancelled = state.service.registry.cancel_all(SHUTDOWN)
            if cancelled:
                log.warning("grace period over: cancelled %d running execution(s)", cancelled)

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the signal after shutting down, so SIGTERM ends the process with
        # status -15; a shutdown that went as planned exits 0 instead.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def tune_gc() -> None:
    """Process-wide collector tuning for a server process, once the app has started: everything
    loaded so far lives as long as the process, so it is kept out of the cyclic GC's traversals
    (which walked it again and again under load), and the young generation is collected less
    often (measured: 0.25 → 0.19 ms of CPU per call, bench/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _glibc(name: str) -> Any:
    """A function of glibc, or None elsewhere (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


_malloc_trim = _glibc("malloc_trim")
_mallopt = _glibc("mallopt")
TRIM_EVERY_S = 5.0
M_MMAP_THRESHOLD = -3  # mallopt's parameters (malloc.h)
M_ARENA_MAX = -8


def tune_malloc() -> None:
    """Process-wide allocator tuning for a server process, before its threads start:

    - blocks of 128 KiB and more (a long conversation's strings, a large body) always come from
      a mapping of their own and go back to the system when freed. By default glibc raises that
      threshold after the first such block is freed, and the next ones stay in the heap: with
      bench/attacks.py, its conversation phase (900,000- and 300,000-character turns) left the
      server 29–31 MiB larger; with this, 1–11 MiB at the phase's end;
    - one malloc arena for every thread instead of up to eight per core: each thread (the
      database writer, the database driver's, ``to_thread``'s) otherwise keeps the memory it
      freed in an arena of its own, out of every other thread's reach. bench/attacks.py: the
      server process 10 s after the load 12.7% above its start with one arena against 16.8%
      with glibc's default; the hot route's req/s 0.99× (median of 9 interleaved rounds, within
      noise: nearly all of the server's allocations happen on the event loop's thread)."""
    if _mallopt is not None:
        _mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        _mallopt(M_ARENA_MAX, 1)


async def release_freed_memory(requests: Callable[[], int]) -> None:
    """Give the memory freed after a burst back to the system, every few seconds: glibc keeps
    freed heap memory for reuse. ``malloc_trim(0)`` returns the free pages (0.1 ms when there is
    nothing to return, a few ms after a burst), in a thread (ctypes releases the GIL) so the
    event loop never waits for it. Once the server has been quiet for a whole period after
    serving (``requests``: how many it has received), the cyclic garbage the burst left is
    collected first — a full collection stops the event loop for some milliseconds, which only a
    quiet server can spare. What a burst leaves beyond that is the small-object allocator's
    partly used arenas, which the next burst reuses (docs/security.md)."""
    seen = collected = requests()
    while True:
        await asyncio.sleep(TRIM_EVERY_S)
        now = requests()
        if now == seen and now != collected:
            gc.collect()
            collected = now
        seen = now
        if _malloc_trim is not None:
            await asyncio.to_thread(_malloc_trim, 0)


def uvicorn_config(app: Any, settings: Settings, loop: str = "uvloop") -> uvicorn.Config:
    """The server as deployed: uvicorn with opentess's connection limits (opentess.connections)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop=loop,
        http=guarded_protocol(settings.connection_limits()),
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        root_path=settings.root_path,
        log_level=settings.log_level,
        log_config=None,  # opentess.logs configures logging
        access_log=False,  # one structured line per request comes from our middleware
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 10,  # a backstop behind ours
    )


def run_single(settings: Settings, sock: socket.socket | None = None) -> None:
    from opentess.api.app import create_app

    tune_malloc()  # again (harmless) for callers other than `opentess serve`, which tunes first
    # room beyond the cap for the refused connections while they linger (opentess.connections)
    open_files = raise_open_files_limit(settings.max_connections * 4 + 256)
    if open_files < settings.max_connections + 64:
        log.warning(
            "this process may open %d files; max_connections (%d) cannot be reached",
            open_files,
            settings.max_connections,
        )
    server = GracefulServer(uvicorn_config(create_app(settings), settings), settings.shutdown_grace_s)
    server.run(sockets=[sock] if sock is not None else None)


def child_main(settings: Settings) -> None:
    """A worker started by ``supervise``: serve on the inherited listening socket."""
    fd = int(os.environ[CHILD_FD_ENV])
    sock = socket.socket(fileno=fd)
    run_single(settings, sock)


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run ``settings.workers`` child processes on one listening socket; forward SIGTERM/SIGINT,
    restart a child that dies on its own, return 0 after a requested shutdown."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    metrics_dir = tempfile.mkdtemp(prefix="opentess-metrics-")
    env = {**os.environ, CHILD_FD_ENV: str(sock.fileno()), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    stopping = False

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "opentess", *argv], env=env, pass_fds=[sock.fileno()])

    children = [spawn() for _ in range(settings.workers)]
    log.info("opentess: %d worker processes on http://%s:%d", settings.workers, settings.host, settings.port)

    def stop(sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(sig)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            for i, child in enumerate(children):
                code = child.poll()
                if code is not None and not stopping:
                    log.error("worker %d exited with status %s; restarting it", child.pid, code)
                    time.sleep(1)
                    children[i] = spawn()
            if stopping and all(c.poll() is not None for c in children):
                break
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    return 1 if failed else 0
