"""The SQL of the direct writers and the column values they hand to their driver, both derived
from the table definition.

Without SQLAlchemy in between, these writers do the little type handling it would have done: a
JSON column's value is serialised (with orjson, several times faster than the json module
SQLAlchemy uses), and on SQLite a DateTime column's value is stored as text in SQLAlchemy's
format, so that SQLAlchemy reads and compares it as its own. Which columns need what is read from
the table's column types when a writer is built; which positions of a statement need it, and the
statement's SQL, once per column set (``Shape``); a call only fills in its values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import JSON, DateTime, Table

from opentess.db.models import Execution

EXECUTIONS = cast(Table, Execution.__table__)
Encoder = Callable[[Any], Any]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sqlite_datetime(value: Any) -> Any:
    """SQLAlchemy's SQLite storage format, ``YYYY-MM-DD HH:MM:SS.ffffff`` (an offset dropped, as
    SQLAlchemy does); ``isoformat`` writes the same text faster than its ``strftime``."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")
    return value


def encoders(table: Table, backend: str) -> dict[str, Encoder]:
    """Column name → what its value goes through on its way to the driver of ``backend``
    ("sqlite" or "postgresql": asyncpg takes datetimes as they are, but JSON only as text)."""
    found: dict[str, Encoder] = {}
    for column in table.columns:
        if isinstance(column.type, JSON):
            found[column.name] = _json
        elif isinstance(column.type, DateTime) and backend == "sqlite":
            found[column.name] = _sqlite_datetime
    return found


@dataclass(frozen=True, slots=True)
class Shape:
    """One statement for one column set: its SQL and the positions whose values need encoding."""

    sql: str
    encode: tuple[tuple[int, Encoder], ...]

    def params(self, values: dict[str, Any]) -> list[Any]:
        params = list(values.values())
        for i, encode in self.encode:
            params[i] = encode(params[i])
        return params


class Statements:
    """INSERT and UPDATE-by-id of one table for one driver, built once per column set."""

    def __init__(self, table: Table, backend: str, placeholder: Callable[[int], str], returning: str = "") -> None:
        self._table = table
        self._encoders = encoders(table, backend)
        self._placeholder = placeholder  # of the n-th parameter, from 1
        self._returning = returning
        self._inserts: dict[tuple[str, ...], Shape] = {}
        self._updates: dict[tuple[str, ...], Shape] = {}

    def insert(self, values: dict[str, Any]) -> Shape:
        keys = tuple(values)
        shape = self._inserts.get(keys)
        if shape is None:
            marks = ", ".join(self._placeholder(i) for i in range(1, len(keys) + 1))
            sql = f"INSERT INTO {self._table.name} ({', '.join(keys)}) VALUES ({marks}){self._returning}"
            shape = self._inserts[keys] = self._shape(keys, sql)
        return shape

    def update(self, values: dict[str, Any]) -> Shape:
        """``UPDATE … WHERE id = <the parameter after the values>``."""
        keys = tuple(values)
        shape = self._updates.get(keys)
        if shape is None:
            sets = ", ".join(f"{k} = {self._placeholder(i)}" for i, k in enumerate(keys, start=1))
            where = f"id = {self._placeholder(len(keys) + 1)}"
            sql = f"UPDATE {self._table.name} SET {sets} WHERE {where}{self._returning}"
            shape = self._updates[keys] = self._shape(keys, sql)
        return shape

    def _shape(self, keys: tuple[str, ...], sql: str) -> Shape:
        unknown = [k for k in keys if k not in self._table.c]  # names go into the SQL: only the table's
        if unknown:
            raise ValueError(f"{self._table.name} has no column {', '.join(unknown)}")
        encode = tuple((i, self._encoders[k]) for i, k in enumerate(keys) if k in self._encoders)
        return Shape(sql, encode)
