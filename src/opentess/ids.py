"""Ids at the boundary: ASCII digits only, within the 64-bit range of the id columns.

Python's ``str.isdigit`` and ``int`` accept other scripts' digits ("٣", "²"), and an id past
2**63 - 1 makes PostgreSQL refuse the query (a 500). Every id that enters through a path, a
header, a query or a body goes through here."""

from __future__ import annotations

import re
from typing import Any

from starlette.convertors import Convertor

MAX_ID = 2**63 - 1
MAX_PAGE = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_id(value: Any) -> int | None:
    """An id from a JSON integer or a string of ASCII digits; None when it is not one (a bool,
    a float, other digits, out of range)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value <= MAX_ID else None
    if isinstance(value, str):
        text = value.strip()
        if _DIGITS.fullmatch(text):
            number = int(text)
            return number if 0 < number <= MAX_ID else None
    return None


class IdConvertor(Convertor[int]):
    """``{name:id}`` in a route path: 1 to 19 ASCII digits. An id past the 64-bit range becomes
    0, which names nothing, so it is answered exactly as a missing id (404)."""

    regex = "[0-9]{1,19}"

    def convert(self, value: str) -> int:
        number = int(value)
        return number if number <= MAX_ID else 0

    def to_string(self, value: int) -> str:
        return str(value)
