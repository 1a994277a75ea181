"""The template renderer's child process: every piece of Jinja work on an agent's instructions
(parsing, checking, compiling, rendering) happens here, never in the server process.

Why a process: Jinja compiles a template to Python code, and Python cannot interrupt a thread
that runs it. A hostile template (nested loops, ``'A' * 10**9``, a filter folded at compile
time with a huge argument) could hold the server's event loop or its memory for as long as it
likes. Here it runs under an address-space limit (``RLIMIT_AS``), a CPU alarm that stops it
between two bytecodes, and an output limit; the server kills the process as a last resort.

Protocol on stdin/stdout: frames of a 4-byte big-endian length and an orjson object.
Request ``{"op": "render" | "check", "source", "values", "max_output"}``; answer
``{"ok": text}`` or ``{"variables": [...], "forbidden": [...]}`` (check) or
``{"error": message, "kind": "syntax" | "runtime" | "limit" | "memory"}``."""

from __future__ import annotations

import os
import resource
import signal
import sys
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from opentess.childproc import read_frame, write_frame

# operators whose result can be much larger than their operands: computed at run time under the
# limits, never folded into a constant by the compiler (Jinja folds constant expressions)
_GROWING = frozenset({"*", "**", "+", "%", "//"})
# blocks that read other templates: there is no loader, so they can only fail
_FORBIDDEN = {nodes.Include: "include", nodes.Extends: "extends", nodes.Import: "import", nodes.FromImport: "import"}


class LimitExceeded(Exception):
    pass


def _finalize(value: Any) -> Any:
    # a multiselect answer renders as "a, b" rather than Python's list repr
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


class _Environment(SandboxedEnvironment):
    intercepted_binops = _GROWING

    def __init__(self, max_output: int) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, finalize=_finalize, keep_trailing_newline=True)
        self.max_output = max_output

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        # refuse before allocating: a string or list repeated past the output limit
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > self.max_output
                ):
                    raise LimitExceeded(f"a repetition would make {len(seq) * times} items")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=8)
def _env(max_output: int) -> _Environment:
    return _Environment(max_output)


@lru_cache(maxsize=128)
def _compiled(source: str, max_output: int) -> Any:
    return _env(max_output).from_string(source)


def check(source: str, max_output: int) -> dict[str, Any]:
    env = _env(max_output)
    ast = env.parse(source)
    forbidden = sorted({word for kind, word in _FORBIDDEN.items() for _ in ast.find_all(kind)})
    variables = sorted(meta.find_undeclared_variables(ast))
    # the fields read as inputs["name"] (constant keys; a computed key is checked when it renders)
    keys = sorted(
        {
            node.arg.value
            for node in ast.find_all(nodes.Getitem)
            if isinstance(node.node, nodes.Name)
            and node.node.name == "inputs"
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        }
    )
    return {"variables": variables, "forbidden": forbidden, "inputs": keys}


def render(source: str, values: dict[str, Any], max_output: int) -> str:
    parts: list[str] = []
    size = 0
    for part in _compiled(source, max_output).generate(values):
        size += len(part)
        if size > max_output:
            raise LimitExceeded(f"the rendered instructions would exceed {max_output} characters")
        parts.append(part)
    return "".join(parts)


class _Alarm(BaseException):
    """Raised by the CPU alarm; a BaseException so that no ``except Exception`` in a template's
    Python callees swallows it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Alarm


def handle(request: dict[str, Any], time_limit_s: float) -> dict[str, Any]:
    max_output = int(request.get("max_output") or 100_000)
    signal.setitimer(signal.ITIMER_REAL, time_limit_s)
    try:
        if request["op"] == "check":
            return check(request["source"], max_output)
        return {"ok": render(request["source"], request.get("values") or {}, max_output)}
    except _Alarm:
        return {"error": f"rendering took longer than {time_limit_s:g} s", "kind": "limit"}
    except LimitExceeded as exc:
        return {"error": str(exc), "kind": "limit"}
    except MemoryError:
        return {"error": "rendering needed more memory than allowed", "kind": "memory"}
    except RecursionError:
        return {"error": "the template recursed too deeply", "kind": "limit"}
    except TemplateSyntaxError as exc:
        return {"error": f"template syntax error on line {exc.lineno}: {exc.message}", "kind": "syntax"}
    except TemplateError as exc:
        return {"error": str(exc.message or exc), "kind": "runtime"}
    except Exception as exc:  # the template's own runtime error (1/0, a bad conversion...)
        return {"error": f"{type(exc).__name__}: {exc}", "kind": "runtime"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def main() -> None:
    memory_mb = int(os.environ.get("OPENTESS_SANDBOX_MEMORY_MB", "256"))
    time_limit_s = float(os.environ.get("OPENTESS_SANDBOX_TIME_S", "1.0"))
    recycle_mb = int(os.environ.get("OPENTESS_SANDBOX_RECYCLE_MB", str(max(64, memory_mb // 2))))
    # the limit counts from what the interpreter and Jinja already take
    with open("/proc/self/statm") if os.path.exists("/proc/self/statm") else open(os.devnull) as statm:
        fields = statm.read().split()
    used = int(fields[0]) * os.sysconf("SC_PAGE_SIZE") if fields else 0
    if used:
        limit = used + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops it by closing stdin
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (request := read_frame(stdin)) is not None:
        answer = handle(request, time_limit_s)
        # a render that grew the heap a lot: answer, then exit so the server starts a fresh one
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        if rss_mb > recycle_mb or answer.get("kind") == "memory":
            answer["recycle"] = True
        write_frame(stdout, answer)
        if answer.get("recycle"):
            return


if __name__ == "__main__":
    main()
