"""Liveness and readiness."""

from __future__ import annotations

from sqlalchemy import text
from starlette.responses import Response

from opentess import metrics
from opentess.api import routing, schemas
from opentess.api.deps import StateDep
from opentess.api.errors import json_response
from opentess.db.engine import current_revision, head_revision

router = routing.router()


@router.get("/healthz", response_model=schemas.Health)
async def healthz() -> Response:
    """The process is alive and serving."""
    return json_response(200, {"status": "ok"})


@router.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def prometheus_metrics() -> Response:
    """Prometheus exposition (all worker processes together)."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@router.get("/readyz", response_model=schemas.Readiness, responses={503: {"model": schemas.Readiness}})
async def readyz(state: StateDep) -> Response:
    """The database answers and its schema is at the latest migration."""
    try:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        current = await current_revision(state.engine)
    except Exception as exc:  # any driver error means "not ready", reported, never raised
        return json_response(503, {"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"})
    head = head_revision()
    if current != head:
        return json_response(503, {"status": "unavailable", "database": "ok", "migration": current, "expected": head})
    return json_response(200, {"status": "ready", "database": "ok", "migration": current})
