"""Validation of custom fields against an agent's questions (contract §2)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from opentess.agents import AgentSpec, validate_spec
from opentess.errors import InvalidInput
from opentess.questions import Question, validate_fields
from opentess.sandbox import TemplateSandbox
from opentess.settings import Settings


def q(**kw: Any) -> Question:
    return Question(**kw)


@pytest.mark.parametrize(
    ("question", "value", "expected"),
    [
        (q(type="select", name="n", options=["1", "2"]), 1, "1"),
        (q(type="select", name="n", options=["1", "2"]), "1.0", "1"),
        (q(type="select", name="n", options=["0.5"]), 0.5, "0.5"),
        (q(type="multiselect", name="m", options=["a", "b", "c"]), ["a", "c"], ["a", "c"]),
        (q(type="multiselect", name="m", options=["a", "b", "c"]), "a, b", ["a", "b"]),
        (q(type="number", name="x", min=0, max=10), "7", 7),
        (q(type="number", name="x"), 2.5, 2.5),
        (q(type="text", name="t"), "hello", "hello"),
        (q(type="textarea", name="t"), 42, "42"),
        (q(type="boolean", name="b"), "true", True),
        (q(type="boolean", name="b"), 0, False),
        (q(type="array", name="a"), [1, "x"], [1, "x"]),
        (q(type="file", name="f"), [3, 4], [3, 4]),
    ],
)
def test_valid_values(question: Question, value: Any, expected: Any) -> None:
    values, errors = validate_fields([question], {question.name: value})
    assert errors == {}
    assert values[question.name] == expected


@pytest.mark.parametrize(
    ("question", "value", "message"),
    [
        (q(type="select", name="n", options=["1", "2"]), "3", "The selected n is invalid"),
        (q(type="multiselect", name="m", options=["a"]), ["a", "z"], "The selected m is invalid"),
        (q(type="multiselect", name="m", options=["a"]), 5, "list or a comma-separated string"),
        (q(type="number", name="x"), "many", "must be a number"),
        (q(type="number", name="x", min=1), 0, "at least 1"),
        (q(type="number", name="x", max=5), 6, "not be greater than 5"),
        (q(type="text", name="t", max_length=3), "abcd", "not be greater than 3 characters"),
        (q(type="text", name="t"), {"a": 1}, "must be a string"),
        (q(type="boolean", name="b"), "maybe", "true or false"),
        (q(type="array", name="a"), "x", "must be an array"),
        (q(type="file", name="f"), "doc.pdf", "file id"),
    ],
)
def test_invalid_values(question: Question, value: Any, message: str) -> None:
    _, errors = validate_fields([question], {question.name: value})
    assert message in errors[question.name][0]


def test_every_bad_field_is_named_at_once() -> None:
    questions = [
        q(type="text", name="a", required=True),
        q(type="number", name="b"),
        q(type="text", name="c", required=False),
        q(type="text", name="d", default="dflt"),
    ]
    values, errors = validate_fields(questions, {"b": "x", "extra": "ignored"})
    assert errors == {"a": ["The a field is required."], "b": ["The b field must be a number."]}
    assert values == {"c": "", "d": "dflt"}


def test_root_fields_win_over_legacy_answers() -> None:
    questions = [q(type="text", name="a"), q(type="text", name="b")]
    values, _ = validate_fields(questions, {"a": "root", "answers": {"a": "legacy", "b": "legacy-b"}})
    assert values == {"a": "root", "b": "legacy-b"}


def test_reserved_questions_are_not_custom_fields() -> None:
    questions = [q(type="select", name="temperature", options=["0"], required=True)]
    assert validate_fields(questions, {}) == ({}, {})


def test_spec_validation_names_every_problem() -> None:
    spec = AgentSpec(
        title="t",
        instructions="{{ undeclared }} {% if %}",
        questions=[q(type="select", name="model", options=["nope"])],
    )
    with pytest.raises(InvalidInput) as info:
        _validate(spec)
    assert "instructions" in info.value.errors and "questions.0" in info.value.errors

    spec = AgentSpec(
        title="t",
        instructions="Hi {{ who }}",
        questions=[
            q(type="text", name="who"),
            q(type="text", name="who"),
            q(type="number", name="n", default="x"),
            q(type="select", name="temperature", options=["3"]),
        ],
    )
    with pytest.raises(InvalidInput) as info:
        _validate(spec)
    errors = info.value.errors
    assert "duplicate" in errors["questions.1"][0]
    assert "invalid default" in errors["questions.2"][0]
    assert "0..2" in errors["questions.3"][0]


def _validate(spec: AgentSpec) -> None:
    async def go() -> None:
        async with TemplateSandbox() as sandbox:
            await validate_spec(spec, Settings(), sandbox)

    asyncio.run(go())
