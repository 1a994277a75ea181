"""Usage: executions and credits per day (UTC) and per agent, for a range of days, in the
visitor's workspace — sums over the stored executions, drawn as SVG by opentess.web.charts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import case, func, select
from starlette.requests import Request
from starlette.responses import Response

from opentess.api.deps import AppState
from opentess.clock import utcnow
from opentess.db.models import Execution
from opentess.web import charts
from opentess.web.console import Visitor, console_of, page
from opentess.web.executions import agent_titles
from opentess.web.render import credits, render

DEFAULT_DAYS = 30
MAX_DAYS = 366


@dataclass(slots=True)
class Sums:
    executions: int = 0
    failed: int = 0
    credits: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _columns() -> list[Any]:
    return [
        func.count(Execution.id),
        func.sum(case((Execution.status == "failed", 1), else_=0)),
        func.sum(Execution.credits),
        func.sum(Execution.prompt_tokens),
        func.sum(Execution.completion_tokens),
    ]


def _sums(row: Any) -> Sums:
    return Sums(int(row[1] or 0), int(row[2] or 0), float(row[3] or 0), int(row[4] or 0), int(row[5] or 0))


async def usage(state: AppState, workspace_id: int, first: date, last: date) -> tuple[dict[str, Sums], dict[int, Sums]]:
    """Sums per day (``YYYY-MM-DD``, every day of the range) and per agent id."""
    where = [
        Execution.workspace_id == workspace_id,
        Execution.created_at >= datetime.combine(first, time()),
        Execution.created_at < datetime.combine(last + timedelta(days=1), time()),
    ]
    day = func.date(Execution.created_at)  # SQLite: text; PostgreSQL: a date (str() agrees)
    async with state.engine.connect() as conn:
        by_day = (await conn.execute(select(day, *_columns()).where(*where).group_by(day))).all()
        by_agent = (
            await conn.execute(select(Execution.agent_id, *_columns()).where(*where).group_by(Execution.agent_id))
        ).all()
    days = {(first + timedelta(days=i)).isoformat(): Sums() for i in range((last - first).days + 1)}
    for row in by_day:
        days[str(row[0])[:10]] = _sums(row)
    return days, {int(row[0]): _sums(row) for row in by_agent}


def _day(value: str | None, fallback: date) -> date:
    try:
        return date.fromisoformat(value) if value else fallback
    except ValueError:
        return fallback


@page
async def usage_page(request: Request, visitor: Visitor) -> Response:
    state = console_of(request).state
    today = utcnow().date()
    last = min(_day(request.query_params.get("until"), today), today)
    first = _day(request.query_params.get("since"), last - timedelta(days=DEFAULT_DAYS - 1))
    first = max(min(first, last), last - timedelta(days=MAX_DAYS - 1))
    days, agents = await usage(state, visitor.workspace.id, first, last)
    titles = await agent_titles(state, set(agents))
    ranked = sorted(agents.items(), key=lambda item: (-item[1].credits, -item[1].executions))
    total = Sums()
    for sums in days.values():
        total.executions += sums.executions
        total.failed += sums.failed
        total.credits += sums.credits
        total.prompt_tokens += sums.prompt_tokens
        total.completion_tokens += sums.completion_tokens
    named = [(titles.get(agent_id, f"agent {agent_id}"), sums) for agent_id, sums in ranked]

    def count(v: float) -> str:
        return f"{v:g}"

    return render(
        request,
        "usage.html",
        visitor,
        section="usage",
        first=first,
        last=last,
        days=days,
        agents=named,
        total=total,
        executions_chart=charts.columns(
            [(d, s.executions) for d, s in days.items()], label="Executions per day", fmt=count
        ),
        credits_chart=charts.columns(
            [(d, s.credits) for d, s in days.items()], label="Credits per day", fmt=credits, css="bar alt"
        ),
        agent_executions_chart=charts.rows(
            [(n, s.executions) for n, s in named], label="Executions per agent", fmt=count
        ),
        agent_credits_chart=charts.rows(
            [(n, s.credits) for n, s in named], label="Credits per agent", fmt=credits, css="bar alt"
        ),
    )
