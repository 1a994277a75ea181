"""What opentess's connection guard costs on the hot path: the same app, settings and agent under
uvicorn twice — once with the config ``opentess.server.uvicorn_config`` builds (its http protocol
is ``GuardedProtocol``, opentess/connections.py), once with that config's protocol replaced by
uvicorn's stock httptools protocol — loaded alternately with wrk (non-streaming chat completions),
several rounds, medians and the ratio guarded / stock.

    python -m bench.guard [--rounds 10] [--duration 3] [--quick] [--output FILE]
    python -m bench.guard serve --port PORT (--guarded | --stock)   (one server; used by the above)

Production code has no switch for this: the stock server is built here, from the same config.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench import load, targets
from bench.run import machine


def serve(port: int, stock: bool) -> None:
    """One server as `opentess serve` runs it (opentess.server.run_single), with its protocol
    replaced by uvicorn's own when ``stock``."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from opentess.api.app import create_app
    from opentess.connections import raise_open_files_limit
    from opentess.logs import setup_logging
    from opentess.server import GracefulServer, uvicorn_config
    from opentess.settings import load_settings

    settings = load_settings(None, port=port)
    setup_logging(settings)
    raise_open_files_limit(settings.max_connections + 256)
    config = uvicorn_config(create_app(settings), settings)
    if stock:
        config.http = HttpToolsProtocol
    GracefulServer(config, settings.shutdown_grace_s).run()


@contextmanager
def server(upstream: str, stock: bool) -> Iterator[tuple[load.Target, int]]:
    """A data dir, a user, the bench agent and a token (as bench/targets.py makes them), then the
    server in its own process."""
    port = targets.free_port()
    with tempfile.TemporaryDirectory(prefix="opentess-guard-") as tmp:
        env = targets.server_env(Path(tmp), targets.upstream_config(upstream))
        agent_file = Path(tmp) / "agent.yaml"
        agent_file.write_text(targets.AGENT_YAML)
        email = f"guard-{port}@example.com"
        user = targets._cli(env, "users", "create", email)
        agent = targets._cli(env, "agents", "create", "--file", str(agent_file), "--workspace",
                             str(user["default_workspace_id"]))  # fmt: skip
        token = targets._cli(env, "tokens", "create", "--user", email)
        args = [sys.executable, "-m", "bench.guard", "serve", "--port", str(port), "--stock" if stock else "--guarded"]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(targets.ROOT), os.environ.get("PYTHONPATH")]))
        with targets.process(args, f"http://127.0.0.1:{port}/healthz", env) as proc:
            target = load.Target(
                "stock" if stock else "guarded",
                f"http://127.0.0.1:{port}/agents/{agent['id']}/openai/chat/completions",
                {"Authorization": f"Bearer {token['token']}"},
            )
            yield target, proc.pid


def cpu_s(pid: int) -> float:
    """CPU time (user + system) the process has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def unfinished_head(target: load.Target) -> str:
    """What a server answers within 2 s to an unfinished 80 KiB request head (the guard's limit is
    64 KiB): shows which protocol each server really runs."""
    host, port = target.url.split("//", 1)[1].split("/", 1)[0].split(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Big: " + b"A" * 80 * 1024)
        try:
            first = sock.recv(64)
        except TimeoutError:
            return "nothing (the connection was held)"
        except OSError as exc:
            return type(exc).__name__
    return first.split(b" ", 2)[1].decode() if first.startswith(b"HTTP/") else repr(first[:20])


def fmt(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def median_ratio(a: list[float], b: list[float]) -> float:
    """The median of the per-round ratios a/b: each pair was measured back to back, so a slow
    drift of the machine (other work on it) touches both sides of a pair alike."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def report(rounds: int, duration: float) -> str:
    names = ("guarded", "stock")
    rps: dict[str, list[float]] = {n: [] for n in names}
    cpu_us: dict[str, list[float]] = {n: [] for n in names}  # server CPU per request at 32 connections
    mean_ms: dict[str, list[float]] = {n: [] for n in names}
    errors = dict.fromkeys(names, 0)
    with targets.fake_upstream() as (upstream, _), ExitStack() as stack:
        servers = {name: stack.enter_context(server(upstream, stock=name == "stock")) for name in names}
        for name, (target, _pid) in servers.items():  # warm up pools, caches and the renderer
            if failed := load.requests(target, 200):
                raise RuntimeError(f"{name}: {failed} of 200 warm-up requests failed")
        heads = {name: unfinished_head(target) for name, (target, _pid) in servers.items()}
        for n in range(rounds):
            order = names if n % 2 == 0 else names[::-1]  # neither always goes first
            for name in order:
                target, pid = servers[name]
                before = cpu_s(pid)
                many = load.wrk(target, 32, duration)
                used = cpu_s(pid) - before
                one = load.wrk(target, 1, duration)
                rps[name].append(many.rps)
                cpu_us[name].append(used / (many.rps * max(1, round(duration))) * 1e6)
                mean_ms[name].append(one.mean_ms)
                errors[name] += many.errors + one.errors
            print(f"  round {n + 1}/{rounds}: guarded {rps['guarded'][-1]:,.0f} req/s, "
                  f"stock {rps['stock'][-1]:,.0f} req/s", file=sys.stderr)  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()

    def row(label: str, values: dict[str, list[float]]) -> str:
        g, st = statistics.median(values["guarded"]), statistics.median(values["stock"])
        return (
            f"| {label} | {fmt(g)} | {fmt(st)} | {g / st:.3f} | "
            f"{median_ratio(values['guarded'], values['stock']):.3f} |"
        )

    paired = [g / st for g, st in zip(rps["guarded"], rps["stock"], strict=True)]
    lines = [
        f"# Connection guard cost — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit or '?'}",
        "",
        f"Machine: {machine()}. wrk, the fake upstream and both servers share these cores.",
        f"The same app (embedded SQLite, the bench agent, one API token) under the config "
        f"`opentess.server.uvicorn_config` builds: `guarded` keeps its protocol (GuardedProtocol), `stock` "
        f"replaces it with uvicorn's HttpToolsProtocol. {rounds} round(s), each loading both in turn (the order "
        f"alternating) with wrk: {duration:g} s at 32 connections (req/s, and the server's CPU time per request "
        f"from /proc), then {duration:g} s at 1 connection (mean latency).",
        "",
        "| scenario | guarded | stock | guarded / stock (medians) | median of per-round ratios |",
        "|---|---|---|---|---|",
        row("non-stream, 32 connections, req/s", rps),
        row("non-stream, 32 connections, server CPU per request (µs)", cpu_us),
        row("non-stream, 1 connection, mean latency (ms)", mean_ms),
        "",
        f"Target: req/s guarded / stock ≥ 0.95. Per round, guarded / stock req/s: "
        f"{', '.join(f'{r:.3f}' for r in paired)}.",
        f"All samples, req/s: guarded {', '.join(f'{v:,.0f}' for v in rps['guarded'])}; "
        f"stock {', '.join(f'{v:,.0f}' for v in rps['stock'])}.",
        "The server's CPU time per request depends less than req/s on how much CPU other work on the machine "
        "leaves to the servers, so it is the steadier measure when the machine is shared; above 1 it is what "
        "the guard adds.",
        f"Which protocol ran: an unfinished 80 KiB request head (the guard's limit is 64 KiB) was answered "
        f"{heads['guarded']} by guarded, {heads['stock']} by stock.",
    ]
    if any(errors.values()):
        lines += ["", f"Failed requests during the run (non-2xx or socket errors): {errors}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        parser = argparse.ArgumentParser(prog="python -m bench.guard serve")
        parser.add_argument("--port", type=int, required=True)
        kind = parser.add_mutually_exclusive_group(required=True)
        kind.add_argument("--guarded", action="store_true")
        kind.add_argument("--stock", action="store_true")
        args = parser.parse_args(argv[1:])
        serve(args.port, stock=args.stock)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.guard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--rounds", type=int, default=10, help="rounds; each loads both servers in turn")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of wrk per server and scenario")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s: checks the harness, not the speed")
    parser.add_argument("--output", help="also write the report to this file")
    args = parser.parse_args(argv)
    if not load.have_wrk():
        sys.exit("wrk is not installed (apt-get install wrk)")
    if args.quick:
        args.rounds, args.duration = 1, 1.0
    text = report(args.rounds, args.duration)
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
