"""The webhooks capability (see opentess.capabilities): the delivery job kind, an end hook on
the execution service (the outbox of this process's ended runs, written at once), the sweep
that catches every other end, and the HTTP client deliveries go out with."""

from __future__ import annotations

from typing import Any

from opentess.capabilities import Capability
from opentess.webhooks.delivery import Deliverer
from opentess.webhooks.outbox import Dispatcher
from opentess.webhooks.sender import Sender
from opentess.webhooks.store import WebhookStore


def capability(state: Any) -> Capability:
    settings = state.settings
    store = WebhookStore(state.engine)
    sender = Sender(settings.webhook_allow_hosts, settings.webhook_timeout_s)
    deliverer = Deliverer(state.engine, state.store.executions, sender, settings.webhook_disable_after)
    dispatcher = Dispatcher(state.engine, store, state.jobs, settings.webhook_sweep_s)
    state.service.end_hooks.append(dispatcher.on_end)
    dispatcher.start()

    async def aclose() -> None:
        await dispatcher.aclose()
        await sender.aclose()

    return Capability(
        "webhooks",
        job_kinds=[deliverer.job_kind()],
        aclose=aclose,
        extras={"store": store, "dispatcher": dispatcher},
    )
