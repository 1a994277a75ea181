"""Agent definitions: the saved spec and its validation. Instructions templates are parsed,
checked and rendered only in the sandbox's child processes (opentess.sandbox)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from opentess.errors import InvalidInput, TemplateProblem, parse_model
from opentess.questions import RESERVED, Question, coerce, default_of
from opentess.sandbox import TemplateSandbox
from opentess.settings import Settings
from opentess.toolsets.registry import problems as toolset_problems

# reserved names the instructions may use: their values are known when the instructions render
TEMPLATE_STEERING = ("model", "tools", "temperature", "inputs")


class AgentSpec(BaseModel):
    """What an operator writes to create an agent (YAML file, management API)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    type: Literal["chat", "text"] = "chat"
    description: str = Field(default="", max_length=10_000)
    long_description: str = Field(default="", max_length=100_000)
    visibility: Literal["private", "workspace", "public"] = "private"
    slug: str | None = Field(default=None, max_length=220)
    active: bool = True
    instructions: str = ""
    questions: list[Question] = Field(default_factory=list, max_length=200)
    # the longest answer of a run when the caller sends no max_tokens (none: the model's default)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "agent"


def parse_spec(data: Any) -> AgentSpec:
    """Parse an agent spec, raising InvalidInput with Laravel-style field errors."""
    return parse_model(AgentSpec, data)


async def validate_spec(spec: AgentSpec, settings: Settings, sandbox: TemplateSandbox) -> None:
    """Check what pydantic cannot: names unique, options present, defaults valid, every
    ``model`` option a configured model, every ``tools`` option a toolset this server can run
    with those models (opentess.toolsets.registry), and the instructions: not too long, valid Jinja, every
    variable a question (or a steering value), no include/import, and a trial render with sample
    values within the sandbox's limits (a template that explodes on constants fails here, not
    at every call)."""
    errors: dict[str, list[str]] = {}
    models = set(settings.models)
    max_instructions_chars = settings.max_instructions_chars
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
    _check_toolsets(spec, settings, errors)
    problems = await _check_instructions(spec, seen, sandbox, max_instructions_chars)
    if problems:
        errors.setdefault("instructions", []).extend(problems)
    if errors:
        raise InvalidInput(errors)


def _check_toolsets(spec: AgentSpec, settings: Settings, errors: dict[str, list[str]]) -> None:
    tools = next((q for q in spec.questions if q.name == "tools"), None)
    if tools is None:
        return
    offered = list(tools.options or [])
    toolset = default_of(tools)
    if toolset is not None and str(toolset) not in offered:
        offered.append(str(toolset))
    model = next((q for q in spec.questions if q.name == "model"), None)
    models = list(model.options or []) if model is not None else []
    default_model = default_of(model) if model is not None else None
    default_model = str(default_model) if default_model is not None else settings.default_model
    if default_model not in models:
        models.append(default_model)
    problems = toolset_problems(
        offered, models, settings, default_toolset=str(toolset) if toolset else None, default_model=default_model
    )
    if problems:
        key = f"questions.{spec.questions.index(tools)}"
        errors.setdefault(key, []).extend(problems)


async def _check_instructions(spec: AgentSpec, names: set[str], sandbox: TemplateSandbox, max_chars: int) -> list[str]:
    if len(spec.instructions) > max_chars:
        return [f"the instructions hold {len(spec.instructions)} characters; at most {max_chars} are allowed"]
    if "{" not in spec.instructions:
        return []
    try:
        check = await sandbox.check(spec.instructions)
    except TemplateProblem as exc:
        return [exc.detail]
    problems = []
    if check.forbidden:
        problems.append(f"the template may not use {', '.join(check.forbidden)}: agents have no other templates")
    steering = set(TEMPLATE_STEERING)
    reserved = sorted(v for v in check.variables if v in RESERVED and v not in steering)
    if reserved:
        problems.append(
            f"the template uses {', '.join(reserved)}: reserved name(s) with no value when the instructions render"
        )
    undeclared = sorted(v for v in check.variables if v not in names and v not in RESERVED)
    if undeclared:
        hyphenated = sorted(n for n in names if "-" in n)
        hint = f' (a field with a hyphen is written inputs["{hyphenated[0]}"])' if hyphenated else ""
        problems.append(
            f"the template uses {', '.join(undeclared)}, which {'is' if len(undeclared) == 1 else 'are'} "
            f"not a question of this agent{hint}"
        )
    unknown_inputs = sorted(k for k in check.inputs if k not in names)
    if unknown_inputs:
        problems.append(
            f"the template reads inputs[{', '.join(map(repr, unknown_inputs))}], not questions of this agent"
        )
    if problems:
        return problems
    try:
        await sandbox.render(spec.instructions, sample_values(spec))
    except TemplateProblem as exc:
        return [f"rendering with sample values failed: {exc.detail}"]
    return []


def sample_values(spec: AgentSpec) -> dict[str, Any]:
    """Values every question could take (its default, else a plausible one), for a trial render."""
    values: dict[str, Any] = {}
    for q in spec.questions:
        if q.default is not None:
            value, problem = coerce(q, q.default)
            if problem is None:
                values[q.name] = value
                continue
        values[q.name] = _sample(q)
    values.setdefault("model", "")
    values.setdefault("tools", "no-tools")
    values.setdefault("temperature", None)
    values["inputs"] = dict(values)
    return values


def _sample(q: Question) -> Any:
    if q.type == "select":
        return q.options[0] if q.options else ""
    if q.type == "multiselect":
        return q.options[:1] if q.options else []
    if q.type == "number":
        return q.min if q.min is not None else 1
    if q.type == "boolean":
        return True
    if q.type in ("array", "file"):
        return []
    if q.type == "object":
        return {}
    return "sample"
