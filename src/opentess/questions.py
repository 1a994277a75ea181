"""An agent's input contract: its questions, and the validation of the values a caller sends.

Reserved names (``temperature``, ``model``, ``tools`` …) steer the run; every other question is a
custom field, sent at the root of the JSON body and rendered into the agent's template.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

QuestionType = Literal["select", "multiselect", "text", "textarea", "number", "boolean", "file", "array", "object"]

RESERVED = frozenset(
    {
        "temperature",
        "model",
        "tools",
        "messages",
        "root_id",
        "file_ids",
        "memory_collections",
        "inputs",  # every field's value, for names a template cannot spell (inputs["call-to-action"])
        "stream",
        "waitExecution",
        "wait_execution",
    }
)
# real Tess agents name fields like `nome-da-empresa`: hyphens are allowed (templates reach such a
# field as inputs["nome-da-empresa"]; a plain name is also a template variable of its own)
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$")
MAX_DEPTH = 32  # nesting of an array value (stored as JSON, whose encoder stops at 254)


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value``, counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | dict):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                break
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class Question(BaseModel):
    """One input field of an agent (contract §2)."""

    model_config = ConfigDict(extra="forbid")

    type: QuestionType
    name: str
    description: str = ""
    required: bool = False
    options: list[str] | None = None
    default: Any = None
    placeholder: str | None = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must be a letter or underscore followed by up to 99 letters, digits, underscores or hyphens"
            )
        return v

    @field_validator("options", mode="before")
    @classmethod
    def _options_as_strings(cls, v: Any) -> Any:
        # YAML turns `0.5` into a float; options are compared as strings (and numerically).
        if isinstance(v, list):
            return [_option_text(o) for o in v]
        return v


def _option_text(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return _number_text(float(v))
    return v


def _number_text(x: float) -> str:
    return str(int(x)) if x.is_integer() else repr(x)


def as_number(value: Any) -> float | None:
    """A finite float from a JSON number or a numeric string; None for anything else (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return x if math.isfinite(x) else None


def match_option(value: Any, options: list[str]) -> str | None:
    """The option ``value`` names, comparing numbers numerically ("1", 1 and 1.0 match "1")."""
    if isinstance(value, str) and value in options:
        return value
    x = as_number(value)
    if x is not None:
        for opt in options:
            if as_number(opt) == x:
                return opt
    return None


def default_of(q: Question) -> Any:
    """A question's default: its ``default``, else its first option (select), else None."""
    if q.default is not None:
        return q.default
    if q.type == "select" and q.options:
        return q.options[0]
    return None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "") or value == []


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce(q: Question, value: Any) -> tuple[Any, str | None]:
    """Validate one present value against its question: (normalised value, error message)."""
    name = q.name
    if q.type == "select":
        opt = match_option(value, q.options or [])
        if opt is None:
            return None, f"The selected {name} is invalid. Valid options: {', '.join(q.options or [])}."
        return opt, None
    if q.type == "multiselect":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            return None, f"The {name} field must be a list or a comma-separated string."
        chosen = []
        for item in items:
            opt = match_option(item.strip() if isinstance(item, str) else item, q.options or [])
            if opt is None:
                return (
                    None,
                    f"The selected {name} is invalid: {item!r}. Valid options: {', '.join(q.options or [])}.",
                )
            chosen.append(opt)
        return chosen, None
    if q.type == "number":
        x = as_number(value)
        if x is None:
            return None, f"The {name} field must be a number."
        if q.min is not None and x < q.min:
            return None, f"The {name} field must be at least {_number_text(q.min)}."
        if q.max is not None and x > q.max:
            return None, f"The {name} field must not be greater than {_number_text(q.max)}."
        return (int(x) if x.is_integer() else x), None
    if q.type in ("text", "textarea"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = _number_text(float(value))
        if not isinstance(value, str):
            return None, f"The {name} field must be a string."
        if q.max_length is not None and len(value) > q.max_length:
            return None, f"The {name} field must not be greater than {q.max_length} characters."
        return value, None
    if q.type == "boolean":
        if isinstance(value, bool):
            return value, None
        text = str(value).strip().lower() if isinstance(value, str | int) else None
        if text in _TRUE:
            return True, None
        if text in _FALSE:
            return False, None
        return None, f"The {name} field must be true or false."
    if q.type == "object":
        if not isinstance(value, dict):
            return None, f"The {name} field must be an object."
        if _depth(value) > MAX_DEPTH:
            return None, f"The {name} field is nested more than {MAX_DEPTH} levels deep."
        return value, None
    if q.type == "array":
        if not isinstance(value, list):
            return None, f"The {name} field must be an array."
        if _depth(value) > MAX_DEPTH:
            return None, f"The {name} field is nested more than {MAX_DEPTH} levels deep."
        return value, None
    # file: one file id or a list of them
    ids = value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return None, f"The {name} field must be a file id or a list of file ids."
    return value, None


def validate_fields(
    questions: list[Question], body: dict[str, Any], earlier: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Validate the custom fields of ``body``: (values for the template, errors by field).

    Values come from the body root, else the legacy ``answers`` object, else ``earlier`` (the
    values of the conversation being continued), else the question's default. An optional field
    left out renders as an empty string.
    """
    answers = body.get("answers")
    legacy = answers if isinstance(answers, dict) else {}
    earlier = earlier or {}
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for q in questions:
        if q.name in RESERVED:
            continue
        value = body.get(q.name)
        if _is_missing(value):
            value = legacy.get(q.name)
        if _is_missing(value):
            value = earlier.get(q.name)
        if _is_missing(value):
            value = q.default  # a custom select has no implicit first-option default
        if _is_missing(value):
            if q.required:
                errors[q.name] = [f"The {q.name} field is required."]
            else:
                values[q.name] = ""
            continue
        coerced, error = coerce(q, value)
        if error:
            errors[q.name] = [error]
        else:
            values[q.name] = coerced
    return values, errors
