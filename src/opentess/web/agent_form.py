"""The agent editor's form, both ways: an agent into the fields of the form, and a submitted
form into the JSON form of an agent (what ``POST /agents`` takes), which opentess.agents then
parses and validates exactly as for the API. The API's errors name spec fields
(``questions.3.default``); ``place`` puts each one beside the control it is about."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, get_args

from starlette.datastructures import FormData

from opentess.agents import AgentSpec
from opentess.questions import Question, QuestionType, coerce
from opentess.store import AgentRecord

QUESTION_TYPES: tuple[str, ...] = get_args(QuestionType)
STEERING = ("model", "temperature", "tools")
ROW_FIELDS = ("name", "type", "description", "options", "default", "placeholder", "min", "max", "max_length")
_ROW = re.compile(r"^q-(\d{1,4})-name$")
_STRUCTURED = ("array", "object", "file")  # defaults written as JSON


@dataclass
class AgentForm:
    """What the editor shows: the raw text of every control, and the errors beside them."""

    title: str = ""
    type: str = "chat"
    description: str = ""
    long_description: str = ""
    visibility: str = "private"
    slug: str = ""
    active: bool = True
    instructions: str = ""
    max_tokens: str = ""
    # the steering questions: model (checked models + default), temperature and tools (lists)
    model_options: list[str] = field(default_factory=list)
    model_default: str = ""
    temperature_options: str = ""
    temperature_default: str = ""
    tools_options: list[str] = field(default_factory=list)
    tools_default: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)  # the custom questions
    # errors: by control ("title", "instructions", "model", …), by row, and the rest
    errors: dict[str, list[str]] = field(default_factory=dict)
    row_errors: dict[int, list[str]] = field(default_factory=dict)
    other_errors: list[str] = field(default_factory=list)
    # where each question of the spec came from: a steering name or "row:N"
    origins: list[str] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.row_errors or self.other_errors)

    def place(self, errors: dict[str, list[str]]) -> None:
        """Put the API's field errors beside their controls."""
        for key, messages in errors.items():
            parts = key.split(".")
            if parts[0] == "questions" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(self.origins):
                origin = self.origins[int(parts[1])]
                detail = f"{parts[2]}: " if len(parts) > 2 else ""
                lines = [detail + m for m in messages]
                if origin.startswith("row:"):
                    self.row_errors.setdefault(int(origin[4:]), []).extend(lines)
                else:
                    self.errors.setdefault(origin, []).extend(lines)
            elif parts[0] in ("title", "type", "description", "long_description", "visibility", "slug", "active",
                              "instructions", "max_tokens"):  # fmt: skip
                self.errors.setdefault(parts[0], []).extend(messages)
            else:
                self.other_errors.extend(f"{key}: {m}" for m in messages)


def _text(value: Any) -> str:
    """A stored value as the editor writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    return json.dumps(value)


def from_agent(agent: AgentRecord) -> AgentForm:
    form = AgentForm(
        title=agent.title,
        type=agent.type,
        description=agent.description,
        long_description=agent.long_description,
        visibility=agent.visibility,
        slug=agent.slug,
        active=bool(agent.active),
        instructions=agent.instructions,
        max_tokens=_text(agent.max_tokens),
    )
    for q in agent.questions:
        if q.name in ("model", "tools") and q.type == "select":
            setattr(form, f"{q.name}_options", list(q.options or []))
            setattr(form, f"{q.name}_default", _text(q.default))
        elif q.name == "temperature" and q.type == "select":
            form.temperature_options = ", ".join(q.options or [])
            form.temperature_default = _text(q.default)
        else:
            form.rows.append(_row(q))
    return form


def _row(q: Question) -> dict[str, Any]:
    default = q.default
    if q.type == "multiselect" and isinstance(default, list):
        text = ", ".join(str(d) for d in default)
    else:
        text = _text(default)
    return {
        "name": q.name,
        "type": q.type,
        "description": q.description,
        "required": q.required,
        "options": "\n".join(q.options or []),
        "default": text,
        "placeholder": q.placeholder or "",
        "min": _text(q.min),
        "max": _text(q.max),
        "max_length": _text(q.max_length),
    }


def _list(text: str) -> list[str]:
    """Options written on one line, separated by commas (temperatures)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _get(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def read_form(form: FormData) -> AgentForm:
    """The editor's state as submitted."""
    out = AgentForm(
        title=_get(form, "title"),
        type=_get(form, "type") or "chat",
        description=_get(form, "description"),
        long_description=_get(form, "long_description"),
        visibility=_get(form, "visibility") or "private",
        slug=_get(form, "slug"),
        active=form.get("active") is not None,
        instructions=str(form.get("instructions") or "").replace("\r\n", "\n"),
        max_tokens=_get(form, "max_tokens"),
        model_options=[str(v) for v in form.getlist("model_options") if isinstance(v, str) and v],
        model_default=_get(form, "model_default"),
        temperature_options=_get(form, "temperature_options"),
        temperature_default=_get(form, "temperature_default"),
        tools_options=[str(v) for v in form.getlist("tools_options") if isinstance(v, str) and v],
        tools_default=_get(form, "tools_default"),
    )
    indices = sorted({int(m.group(1)) for key in form if (m := _ROW.match(key))})
    for i in indices:
        row: dict[str, Any] = {name: _get(form, f"q-{i}-{name}") for name in ROW_FIELDS}
        row["options"] = str(form.get(f"q-{i}-options") or "").replace("\r\n", "\n")
        row["required"] = form.get(f"q-{i}-required") is not None
        if any(row[name] for name in ROW_FIELDS if name != "type") or row["required"]:
            out.rows.append(row)  # a row left blank is no question
    return out


def to_spec_data(form: AgentForm) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The JSON form of the agent (the body ``POST /agents`` takes), and the problems only the
    form can have (a minimum that is not a number); the rest is for opentess.agents to say."""
    errors: dict[str, list[str]] = {}
    questions: list[dict[str, Any]] = []
    form.origins = []
    if form.model_options:
        questions.append(_steering("model", form.model_options, form.model_default))
        form.origins.append("model")
    if form.temperature_options or form.temperature_default:
        questions.append(_steering("temperature", _list(form.temperature_options), form.temperature_default))
        form.origins.append("temperature")
    if form.tools_options or form.tools_default:
        questions.append(_steering("tools", form.tools_options, form.tools_default))
        form.origins.append("tools")
    for i, row in enumerate(form.rows):
        index = len(questions)
        questions.append(_question(row, f"questions.{index}", errors))
        form.origins.append(f"row:{i}")
    data: dict[str, Any] = {
        "title": form.title,
        "type": form.type,
        "description": form.description,
        "long_description": form.long_description,
        "visibility": form.visibility,
        "active": form.active,
        "instructions": form.instructions,
        "questions": questions,
        "max_tokens": None,
    }
    if form.max_tokens:
        if form.max_tokens.isdigit():
            data["max_tokens"] = int(form.max_tokens)
        else:
            errors["max_tokens"] = ["The longest answer must be a whole number of tokens."]
    if form.slug:
        data["slug"] = form.slug
    return data, errors


def _steering(name: str, options: list[str], default: str) -> dict[str, Any]:
    q: dict[str, Any] = {"type": "select", "name": name, "options": options}
    if default:
        q["default"] = default
    return q


def _question(row: dict[str, Any], key: str, errors: dict[str, list[str]]) -> dict[str, Any]:
    kind = row["type"] or "text"
    q: dict[str, Any] = {"type": kind, "name": row["name"], "required": bool(row["required"])}
    if row["description"]:
        q["description"] = row["description"]
    if kind in ("select", "multiselect"):
        q["options"] = _lines(row["options"])
    if row["placeholder"]:
        q["placeholder"] = row["placeholder"]
    for bound in ("min", "max") if kind == "number" else ():
        if row[bound]:
            try:
                q[bound] = float(row[bound])
            except ValueError:
                errors[f"{key}.{bound}"] = [f"The {bound} must be a number."]
    if kind in ("text", "textarea") and row["max_length"]:
        if row["max_length"].isdigit() and int(row["max_length"]) >= 1:
            q["max_length"] = int(row["max_length"])
        else:
            errors[f"{key}.max_length"] = ["The maximum length must be a whole number of at least 1."]
    if row["default"] != "":
        q["default"] = _default(kind, row["default"])
    return q


def _default(kind: str, text: str) -> Any:
    """A default as written in the editor: JSON for structured types (kept as text when it is
    not JSON, so that validation names the problem), text otherwise."""
    if kind in _STRUCTURED:
        try:
            return json.loads(text)
        except ValueError:
            if kind == "file":
                parts = [p.strip() for p in text.split(",")]
                if all(p.isdigit() for p in parts):
                    return [int(p) for p in parts]
            return text
    return text


def normalise_defaults(spec: AgentSpec) -> AgentSpec:
    """Store defaults as values of their type (``5``, not ``"5"``) when they are valid: what
    the API would have been sent. Invalid ones stay as written, for validation to name."""
    for q in spec.questions:
        if q.default is not None and q.type not in ("select", "text", "textarea"):
            value, problem = coerce(q, q.default)
            if problem is None:
                q.default = value
    return spec


def sample_inputs(form: FormData, spec: AgentSpec) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The preview's sample values (``sample-NAME`` fields), checked like a call's values."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for q in spec.questions:
        raw = form.get(f"sample-{q.name}")
        if not isinstance(raw, str) or raw.strip() == "":
            continue
        given: Any = _default(q.type, raw.strip())
        value, problem = coerce(q, given)
        if problem:
            errors[f"sample-{q.name}"] = [problem]
        else:
            values[q.name] = value
    return values, errors
