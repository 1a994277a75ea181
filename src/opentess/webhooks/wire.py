"""The webhooks capability's wire objects (Tess's shapes, contract §10, and the deliveries
beyond Tess)."""

from __future__ import annotations

from typing import Any

from opentess.clock import laravel
from opentess.webhooks.store import AttemptRecord, DeliveryRecord, WebhookRecord


def created(record: WebhookRecord) -> dict[str, Any]:
    """The answer to ``POST /agents/{id}/webhooks``: the only one that shows the secret."""
    return {
        "id": record.id,
        "template_id": record.agent_id,
        "user_id": record.user_id,
        "url": record.url,
        "method": record.method,
        "status": record.status,
        "created_at": laravel(record.created_at),
        "updated_at": laravel(record.updated_at),
        "secret": record.secret,
    }


def webhook(record: WebhookRecord) -> dict[str, Any]:
    """A webhook as the listings show it: its counters, never its secret."""
    return {
        "id": record.id,
        "template_id": record.agent_id,
        "user_id": record.user_id,
        "url": record.url,
        "method": record.method,
        "success_count": record.success_count,
        "failure_count": record.failure_count,
        "status": record.status,
        "disabled_reason": record.disabled_reason,
        "disabled_at": laravel(record.disabled_at),
        "created_at": laravel(record.created_at),
        "updated_at": laravel(record.updated_at),
        "deleted_at": laravel(record.deleted_at),
    }


def attempt(record: AttemptRecord) -> dict[str, Any]:
    return {
        "attempt": record.attempt,
        "created_at": laravel(record.created_at),
        "success": record.success,
        "status_code": record.status_code,
        "duration_ms": record.duration_ms,
        "error": record.error,
        "response": record.response,
    }


def delivery(record: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "webhook_id": record.webhook_id,
        "execution_id": record.execution_id,
        "message_id": record.message_id,
        "status": record.status,
        "attempts": [attempt(a) for a in record.tries],
        "error": record.error,
        "created_at": laravel(record.created_at),
        "updated_at": laravel(record.updated_at),
        "delivered_at": laravel(record.delivered_at),
    }
