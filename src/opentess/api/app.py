"""The application factory. Nothing happens at import time; the lifespan opens and closes the
database engine, the model providers and the upstream HTTP pools."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from opentess import __version__
from opentess.api import agents, errors, execute, health, openai_compat, responses, tokens
from opentess.api.fastpath import FastRoute
from opentess.api.limits import BodyLimit
from opentess.api.observability import Observability
from opentess.api.paths import PathGuard
from opentess.api.state import AppState
from opentess.auth import Authenticator
from opentess.coordination import make_cancel_bus, make_limiter
from opentess.db.engine import make_engine, pending_migrations
from opentess.limits import Admission
from opentess.providers import ModelRegistry
from opentess.sandbox import TemplateSandbox
from opentess.service import ExecutionService
from opentess.settings import Settings, load_settings
from opentess.store import Store, close_store

log = logging.getLogger("opentess")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings)
        store = Store(engine, settings.db_pool_size, settings.db_busy_timeout_s)
        models = ModelRegistry(settings)
        sandbox = TemplateSandbox(settings.sandbox_limits())
        admission = Admission(make_limiter(settings), run_ttl_s=settings.run_timeout_s + 60)
        auth = Authenticator(store, settings, admission)
        instance_id = str(uuid.uuid4())
        service = ExecutionService(store, models, settings, instance_id, admission, sandbox)
        bus = make_cancel_bus(settings)
        await bus.start(service.runs.cancel)
        app.state.opentess = AppState(settings, engine, store, models, service, auth, bus, sandbox)
        if await pending_migrations(engine):
            # `opentess serve` refuses this; an app started another way stays unready (/readyz)
            log.error("the database schema is not current; run `opentess migrate`")
        else:
            await store.instances.register(instance_id)
            await store.instances.reap(settings.instance_stale_s)
        keeper = asyncio.create_task(_housekeeping(service, instance_id, settings))
        # Everything loaded so far lives as long as the process: keep it out of the cyclic GC's
        # traversals, which walked it again and again under load, and collect the young
        # generation less often (measured: 0.25 → 0.19 ms of CPU per call, bench/README.md)
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        try:
            yield
        finally:
            keeper.cancel()
            await service.runs.shutdown()
            await bus.aclose()
            await admission.limiter.aclose()
            await store.instances.unregister(instance_id)
            await auth.drain()
            await models.aclose()
            await sandbox.aclose()
            await close_store(store)

    app = OpentessApp(
        title="opentess",
        version=__version__,
        description="Self-hosted Tess agent API with an OpenAI-compatible endpoint.",
        lifespan=lifespan,
    )
    errors.install(app)
    for prefix in ("", "/api"):
        for module in (openai_compat, execute, agents, responses, tokens):
            app.include_router(module.router, prefix=prefix)
    app.include_router(health.router)
    # Pure-ASGI layers in front of FastAPI's own stack: Observability sees every answer (413s
    # included); FastRoute serves the hot route without the framework's layers.
    app.router.redirect_slashes = False  # PathGuard drops trailing slashes instead
    app.front = Observability(PathGuard(BodyLimit(FastRoute(app.framework, app), max_bytes=settings.max_body_bytes)))
    return app


class OpentessApp(FastAPI):
    """FastAPI with our own pure-ASGI layers in front of it for HTTP requests."""

    front: ASGIApp | None = None

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.front is not None:
            scope["app"] = self
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


async def _housekeeping(service: ExecutionService, instance_id: str, settings: Settings) -> None:
    """Heartbeat; store the ends of runs that could not be stored when they ended; fail the runs
    of processes that died (any process may do it; it is idempotent)."""
    store = service.store
    beats = 0
    while True:
        await asyncio.sleep(settings.heartbeat_s)
        beats += 1
        try:
            await store.executions.store_unstored()
            await store.instances.heartbeat(instance_id)
            if beats % 3 == 0:
                failed = await store.instances.reap(settings.instance_stale_s)
                if failed:
                    log.warning("failed %d execution(s) of server processes that stopped", failed)
                lost = await store.instances.fail_lost(
                    instance_id,
                    service.runs.ids() | store.executions.unstored_ids(),
                    older_than_s=settings.run_timeout_s + 60,
                )
                if lost:
                    log.error("failed %d execution(s) of this process that no run was driving", lost)
        except Exception:
            log.exception("housekeeping failed; retrying at the next heartbeat")


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and multi-worker serving: settings from the environment."""
    return create_app(load_settings())
