"""Agent instructions render in child processes under time, memory and output limits: a hostile
template gets a clear error and never holds the server (issue: hardening, findings 1, 2 and 8)."""

from __future__ import annotations

import asyncio

import pytest

from opentess.agents import AgentSpec, validate_spec
from opentess.errors import InvalidInput, TemplateProblem
from opentess.questions import Question
from opentess.sandbox import SandboxLimits, TemplateSandbox
from opentess.settings import Settings

FREEZE = "{% for i in range(100000) %}{% for j in range(4000) %}{% endfor %}{% endfor %}{{ product }}"


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _render(source: str, values: dict[str, object], **limits: object) -> str:
    async with TemplateSandbox(SandboxLimits(**limits)) as sandbox:  # type: ignore[arg-type]
        return await sandbox.render(source, values)


def test_fields_render_and_lists_join() -> None:
    text = run(_render("Langs: {{ langs }}; n={{ n }}", {"langs": ["en", "fr"], "n": 3}))
    assert text == "Langs: en, fr; n=3"


def test_the_template_is_sandboxed() -> None:
    with pytest.raises(TemplateProblem) as info:
        run(_render("{{ x.__class__.__mro__[1].__subclasses__() }}", {"x": ""}))
    assert info.value.errors["instructions"][0].startswith("The agent's instructions could not be rendered")


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("{{ 'A' * 5000000 }}{{ product }}", "repetition"),
        ("{{ 2 ** 100000 }}", "digits"),
        ("{{ 1/0 }}", "division by zero"),
        ("{{ range(100001) }}", "Range too big"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", "exceed"),
        ("{{ 'a'|center(1000000000) }}", "memory"),
        ("{{ undefined_name }}", "undefined"),
    ],
)
def test_runtime_errors_and_limits_are_field_errors(source: str, words: str) -> None:
    """Each is a 4xx naming ``instructions`` (422 native, 400 OpenAI), never a 500."""
    with pytest.raises(TemplateProblem) as info:
        run(_render(source, {"product": "p"}, max_output_chars=100_000, memory_mb=128))
    assert info.value.status == 422 and info.value.openai_status == 400
    assert info.value.param == "instructions"
    assert words in info.value.errors["instructions"][0]


def test_the_renderer_recovers_after_a_child_runs_out_of_memory() -> None:
    async def go() -> str:
        async with TemplateSandbox(SandboxLimits(memory_mb=128, workers=1)) as sandbox:
            with pytest.raises(TemplateProblem):
                await sandbox.render("{{ 'a'|center(1000000000) }}", {})
            return await sandbox.render("still {{ x }}", {"x": "here"})

    assert run(go()) == "still here"


def test_a_hostile_template_does_not_hold_other_work() -> None:
    """While the freezing template renders, the event loop keeps running other work: a task
    started after it finishes its many steps before the render ends."""

    async def go() -> tuple[list[str], str]:
        order: list[str] = []
        async with TemplateSandbox(SandboxLimits(time_s=2.0, workers=2)) as sandbox:

            async def hostile() -> None:
                with pytest.raises(TemplateProblem) as info:
                    await sandbox.render(FREEZE, {"product": "p"})
                order.append("hostile ended: " + info.value.detail)

            async def other() -> None:
                for _ in range(50):
                    await asyncio.sleep(0)
                order.append("other work done")

            await asyncio.gather(hostile(), other())
            # the template is refused at once now, without occupying a renderer
            with pytest.raises(TemplateProblem) as again:
                await sandbox.render(FREEZE, {"product": "q"})
            return order, again.value.detail

    order, again = run(go())  # type: ignore[misc]
    assert order[0] == "other work done"
    assert "longer than 2 s" in order[1]
    assert "stopped recently" in again


def test_render_cache_is_bounded_in_bytes() -> None:
    async def go() -> tuple[int, int]:
        async with TemplateSandbox(SandboxLimits(cache_bytes=64 * 1024)) as sandbox:
            for i in range(400):
                await sandbox.render("{{ 'x' * 600 }}{{ n }}", {"n": i})
            return sandbox._cache.size, len(sandbox._cache._entries)

    size, entries = run(go())
    assert size <= 64 * 1024
    assert entries > 10  # it does cache (each entry is under 1/64 of the cache)


def test_a_render_too_large_for_its_share_of_the_cache_is_not_kept() -> None:
    """A render over 1/64 of the cache is rendered again when asked again: a few of them would
    fill the cache and stay resident, for a saving that is nothing next to their calls' cost."""

    async def go() -> tuple[int, int]:
        async with TemplateSandbox(SandboxLimits(cache_bytes=64 * 1024)) as sandbox:
            await sandbox.render("{{ 'x' * 2000 }}{{ n }}", {"n": 1})
            large = len(sandbox._cache._entries)
            await sandbox.render("{{ 'x' * 10 }}{{ n }}", {"n": 1})
            return large, len(sandbox._cache._entries)

    assert run(go()) == (0, 1)


def _spec(instructions: str, *questions: Question) -> AgentSpec:
    return AgentSpec(title="t", instructions=instructions, questions=list(questions))


async def _validate(spec: AgentSpec, max_chars: int = 100_000) -> None:
    async with TemplateSandbox() as sandbox:
        await validate_spec(spec, Settings(max_instructions_chars=max_chars), sandbox)


@pytest.mark.parametrize(
    ("instructions", "words"),
    [
        ("{{ 2 ** 100000 }}", "digits"),
        (FREEZE, "longer than"),
        ("{{ temperature }} {{ messages }}", "reserved"),
        ("{% include 'other.txt' %}", "may not use include"),
        ("{% if %}", "syntax error"),
        ("{{ product }}{{ nope }}", "not a question"),
    ],
)
def test_saving_refuses_templates_that_cannot_render(instructions: str, words: str) -> None:
    spec = _spec(instructions, Question(type="text", name="product"))
    with pytest.raises(InvalidInput) as info:
        run(_validate(spec))
    assert words in " ".join(info.value.errors["instructions"])


def test_steering_values_may_be_used_and_long_instructions_are_refused() -> None:
    run(_validate(_spec("Model {{ model }}, tools {{ tools }}, temperature {{ temperature }}")))
    with pytest.raises(InvalidInput) as info:
        run(_validate(_spec("x" * 101), max_chars=100))
    assert "at most 100" in info.value.errors["instructions"][0]
