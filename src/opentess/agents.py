"""Agent definitions: the saved spec, its validation, and rendering its instructions template."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field

from opentess.errors import InvalidInput, OpentessError, parse_model
from opentess.questions import Question, coerce


def _finalize(value: Any) -> Any:
    # a multiselect answer renders as "a, b" rather than Python's list repr
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, finalize=_finalize, keep_trailing_newline=True)


class AgentSpec(BaseModel):
    """What an operator writes to create an agent (YAML file, management API)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    type: Literal["chat", "text"] = "chat"
    description: str = ""
    long_description: str = ""
    visibility: Literal["private", "workspace", "public"] = "private"
    slug: str | None = Field(default=None, max_length=220)
    active: bool = True
    instructions: str = ""
    questions: list[Question] = Field(default_factory=list)


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "agent"


def parse_spec(data: Any) -> AgentSpec:
    """Parse an agent spec, raising InvalidInput with Laravel-style field errors."""
    return parse_model(AgentSpec, data)


def validate_spec(spec: AgentSpec, model_names: Iterable[str]) -> None:
    """Check what pydantic cannot: names unique, options present, defaults valid, the template's
    variables all declared, every ``model`` option a configured model."""
    errors: dict[str, list[str]] = {}
    models = set(model_names)
    seen: set[str] = set()
    for i, q in enumerate(spec.questions):
        key = f"questions.{i}"
        if q.name in seen:
            errors.setdefault(key, []).append(f"duplicate question name {q.name!r}")
        seen.add(q.name)
        if q.type in ("select", "multiselect") and not q.options:
            errors.setdefault(key, []).append(f"a {q.type} question needs options")
            continue
        if q.default is not None:
            _, problem = coerce(q, q.default)
            if problem:
                errors.setdefault(key, []).append(f"invalid default: {problem}")
        if q.name == "model":
            unknown = [m for m in (q.options or []) if m not in models]
            if q.default is not None and str(q.default) not in models:
                unknown.append(str(q.default))
            if unknown:
                errors.setdefault(key, []).append(
                    f"unknown model(s) {', '.join(unknown)}; configured: {', '.join(sorted(models))}"
                )
        if q.name == "temperature" and q.options:
            for opt in q.options:
                try:
                    t = float(opt)
                except ValueError:
                    t = -1.0
                if not 0 <= t <= 2:
                    errors.setdefault(key, []).append(f"temperature option {opt!r} is not a number in 0..2")
    try:
        variables = meta.find_undeclared_variables(_ENV.parse(spec.instructions))
    except TemplateError as exc:
        errors.setdefault("instructions", []).append(f"template syntax error: {exc}")
    else:
        undeclared = sorted(v for v in variables if v not in seen)
        if undeclared:
            errors.setdefault("instructions", []).append(
                f"the template uses {', '.join(undeclared)}, which {'is' if len(undeclared) == 1 else 'are'} "
                "not a question of this agent"
            )
    if errors:
        raise InvalidInput(errors)


class TemplateRenderError(OpentessError):
    status = 500
    error = "Template error"


@lru_cache(maxsize=512)
def _compiled(source: str) -> Any:
    return _ENV.from_string(source)


def render_instructions(source: str, values: dict[str, Any]) -> str:
    """Render an agent's instructions with the validated field values."""
    if "{" not in source:
        return source
    if sum(len(v) if isinstance(v, str) else 8 for v in values.values()) > 1024:
        return _render(source, values)  # long inputs would make the cache a memory sink
    try:
        key = (source, *sorted(values.items()))
        hash(key)
    except TypeError:  # a list value (multiselect, array): render every time
        return _render(source, values)
    return _render_cached(key, source)


@lru_cache(maxsize=4096)
def _render_cached(key: tuple[Any, ...], source: str) -> str:
    # most calls of an agent render the same defaults: render once per distinct set of values
    return _render(source, dict(key[1:]))


def _render(source: str, values: dict[str, Any]) -> str:
    try:
        return str(_compiled(source).render(values))
    except TemplateError as exc:
        raise TemplateRenderError(f"the agent's instructions could not be rendered: {exc}") from exc
