"""Logs a person can read, and logs a machine can: plain text lines when stderr is a terminal,
one JSON object per line otherwise (``log_format``: ``auto``, the default, ``text`` or
``json``). Every request is one line (method, path, status, duration, execution id; the cause
of a 5xx); errors carry their cause (and traceback) in both formats. Message bodies and tokens
are never logged; terminal colour codes never reach a JSON line."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from opentess.settings import Settings

# attributes every LogRecord has; anything else was passed with extra={...} and is logged as a field
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
# uvicorn adds a coloured copy of some messages for its own formatter
_DROPPED = {"color_message"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and key not in _DROPPED and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _ANSI.sub("", record.getMessage()),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-11-27 10:00:00 INFO  POST /agents/1/openai/chat/completions 200 3.1 ms execution=7``"""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        fields = _fields(record)
        if record.name == "opentess.access" and "status" in fields:
            text = f"{fields.pop('method')} {fields.pop('path')} {fields.pop('status')} {fields.pop('duration_ms')} ms"
            fields.pop("route", None)
        else:
            text = f"{record.name}: {_ANSI.sub('', record.getMessage())}"
        extras = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        line = f"{when} {record.levelname:<5} {text}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def choose_format(setting: str, stream: TextIO) -> str:
    if setting != "auto":
        return setting
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def setup_logging(settings: Settings, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    formatter = JsonFormatter() if choose_format(settings.log_format, stream) == "json" else TextFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # one line per request comes from opentess.access; uvicorn's own would repeat it
    logging.getLogger("uvicorn.access").disabled = True
    # migrations say what they apply through `opentess migrate`; at start they would only be noise
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
