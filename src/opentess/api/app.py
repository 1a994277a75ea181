"""The application factory. Nothing happens at import time; the lifespan opens and closes the
database engine, the model providers, the template renderer and the coordination channels.

Every request takes one path: the middleware stack (outermost first: observability with the
error boundary, CORS when configured, the request boundary: path rules and body limit), then
the router, whose first routes are the
OpenAI-compatible hot route (a plain Starlette route, opentess.api.openai), then FastAPI's
routes. The request path is drawn in docs/architecture.md."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from opentess import __version__
from opentess.api import agents, docs, errors, execute, executions, health, openai, routing, tokens, workspaces
from opentess.api import files as api_files
from opentess.api import memories as api_memories
from opentess.api import webhooks as api_webhooks
from opentess.api.boundary import RequestBoundary
from opentess.api.deps import STATE_ATTRIBUTE, AppState
from opentess.api.observability import Observability
from opentess.api.schemas import install_openapi
from opentess.auth import Authenticator
from opentess.coordination import make_cancel_bus, make_limiter
from opentess.db.engine import make_engine, pending_migrations
from opentess.executions.service import ExecutionService
from opentess.files import capability as files
from opentess.files import uploads as files_uploads
from opentess.jobs import JobQueue, JobRunner
from opentess.limits import Admission
from opentess.memories import capability as memories
from opentess.providers import ModelRegistry
from opentess.sandbox import TemplateSandbox
from opentess.settings import Settings, load_settings
from opentess.store import Store, close_store
from opentess.toolsets import capability as toolsets
from opentess.web import capability as web
from opentess.webhooks import capability as webhooks

log = logging.getLogger("opentess")
# in order: the toolsets' knowledge and memory tools use the files and memories capabilities
CAPABILITIES = (files, memories, webhooks, web, toolsets)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings)
        store = Store(engine, settings.db_pool_size, settings.db_busy_timeout_s)
        models = ModelRegistry(settings)
        sandbox = TemplateSandbox(settings.sandbox_limits())
        admission = Admission(make_limiter(settings), run_ttl_s=settings.run_timeout_s + 60)
        auth = Authenticator(store, settings)
        instance_id = str(uuid.uuid4())
        bus = make_cancel_bus(settings)
        service = ExecutionService(store, models, settings, instance_id, admission, sandbox, bus)
        await bus.start(service.registry.cancel)
        jobs = JobQueue(engine)
        runner = JobRunner(
            jobs,
            concurrency=settings.jobs_concurrency,
            poll_s=settings.jobs_poll_s,
            backoff_scale=settings.jobs_backoff_scale,
        )
        state = AppState(settings, engine, store, models, service, auth, admission, bus, sandbox, jobs, runner)
        runner.bind(state)  # job handlers reach the server's objects through their context
        for module in CAPABILITIES:
            found = module.capability(state)
            state.capabilities[found.name] = found
            for kind in found.job_kinds:
                state.runner.register(kind)
            service.sources.extend(found.context_sources)
        app.state.opentess = state
        setattr(app, STATE_ATTRIBUTE, state)  # the fast path of opentess.api.deps.app_state
        if await pending_migrations(engine):
            # `opentess serve` refuses this; an app started another way stays unready (/readyz)
            log.error("the database schema is not current; run `opentess migrate`")
        else:
            await store.instances.register(instance_id)
            await store.instances.reap(settings.instance_stale_s)
        keeper = asyncio.create_task(_housekeeping(service, instance_id, settings))
        state.runner.start()
        try:
            yield
        finally:
            keeper.cancel()
            await state.runner.aclose()
            await service.shutdown()
            for found in state.capabilities.values():
                if found.aclose is not None:
                    await found.aclose()
            await bus.aclose()
            await admission.limiter.aclose()
            await store.instances.unregister(instance_id)
            await auth.drain()
            await models.aclose()
            await sandbox.aclose()
            await close_store(store)

    middleware = [Middleware(Observability)]
    if settings.cors_origins:  # a layer on every request: only when browsers of other origins call
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["x-request-id", "retry-after"],
                max_age=600,
            )
        )
    # the file uploads stream bodies up to OPENTESS_MAX_FILE_BYTES; every other route keeps the body limit
    upload_limit = files_uploads.body_limit(settings.max_file_bytes)
    middleware.append(Middleware(RequestBoundary, max_body_bytes=settings.max_body_bytes, limit_for=upload_limit))
    app = OpentessAPI(
        title="opentess",
        version=__version__,
        description=(
            "The Tess agent API, self-hosted: agents, their executions, and an OpenAI-compatible "
            "chat completions endpoint per agent. Authenticate with an API token "
            "(`Authorization: Bearer ot_…`)."
        ),
        lifespan=lifespan,
        middleware=middleware,
        docs_url=None,  # served from the installed package (opentess.api.docs), not from a CDN
        redoc_url=None,
        redirect_slashes=False,  # RequestBoundary drops a trailing slash instead of redirecting
        # FastAPI's OpenTelemetry hooks look the providers up on every request (~40 µs measured);
        # opentess exports Prometheus metrics and its own request log instead
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.router.route_class = routing.Route
    errors.install(app)
    app.router.routes[:0] = openai.routes()  # first: matched before anything else
    for prefix in ("", "/api"):
        for module in (execute, agents, executions, tokens, workspaces, openai, api_files, api_memories, api_webhooks):
            app.include_router(module.router, prefix=prefix)
    app.include_router(health.router)
    docs.install(app)
    web.install(app)
    install_openapi(app)
    return app


class OpentessAPI(FastAPI):
    """FastAPI without the layers of its own that every request would cross for nothing here:
    Starlette's server-error guard (the outermost user middleware, opentess.api.observability,
    is the error boundary: it logs and answers whatever no handler took, so the guard never saw
    an exception), OpenTelemetry's exception hook (its telemetry is off: opentess exports
    Prometheus metrics), its body-size limiter (opentess.api.boundary enforces the limit,
    answering in the route's wire format) and the exit stack its routes need (they open it
    themselves: opentess.api.routing); and with Starlette's exception middleware replaced by
    a leaner one with the same handlers (opentess.api.errors.ExceptionHandling). The user
    middleware and the router are the framework's own. Each layer is crossed again at every
    await of a request that suspends, so they add up (measured on the hot route:
    bench/README.md)."""

    opentess_state: AppState | None = None  # set by the lifespan (opentess.api.deps.app_state)

    def build_middleware_stack(self) -> ASGIApp:
        if self.max_body_size is not None:  # pragma: no cover - opentess never sets it
            return super().build_middleware_stack()
        saved, self.user_middleware = self.user_middleware, list(self.user_middleware)
        try:
            stack = super().build_middleware_stack()
        finally:
            self.user_middleware = saved
        return errors.with_exception_handling(_without(stack, _UNUSED_LAYERS))


# by name: they are private to Starlette/FastAPI (0.16x); with one that lacks them, nothing is
# removed. The exit stack is opened by each FastAPI route instead (opentess.api.routing).
_UNUSED_LAYERS = frozenset(
    {"ServerErrorMiddleware", "ExceptionTelemetryMiddleware", "AppBodyLimitMiddleware", "AsyncExitStackMiddleware"}
)


def _without(app: ASGIApp, names: frozenset[str]) -> ASGIApp:
    """The middleware chain ``app`` (each layer holds the next as ``.app``) without the layers
    whose class is named in ``names`` (the outermost one included)."""
    while type(app).__name__ in names:
        app = app.app  # type: ignore[attr-defined]
    node: Any = app
    while node is not None:
        while type(getattr(node, "app", None)).__name__ in names:
            node.app = node.app.app
        node = getattr(node, "app", None)
    return app


async def _housekeeping(service: ExecutionService, instance_id: str, settings: Settings) -> None:
    """Heartbeat; store the ends of executions that could not be stored when they ended; fail
    the executions of processes that died (any process may do it; it is idempotent) and those
    of this process that nothing drives any more."""
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
                    service.registry.ids() | store.executions.unstored_ids(),
                    older_than_s=settings.run_timeout_s + 60,
                )
                if lost:
                    log.error("failed %d execution(s) of this process that nothing was driving", lost)
        except Exception:
            log.exception("housekeeping failed; retrying at the next heartbeat")


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and multi-worker serving: settings from the environment."""
    return create_app(load_settings())
