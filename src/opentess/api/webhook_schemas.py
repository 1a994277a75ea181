"""What the webhooks routes take and answer (contract §10, and the deliveries beyond Tess), for
the OpenAPI document; the answers are built by opentess.webhooks.wire."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from opentess.api.schemas import Page, Timestamp


class WebhookCreated(BaseModel):
    """The new webhook, with its signing secret: shown in this answer only."""

    id: int
    template_id: int = Field(description="The agent's id")
    user_id: int
    url: str
    method: Literal["POST", "GET"]
    status: Literal["active", "inactive"]
    created_at: Timestamp
    updated_at: Timestamp
    secret: str = Field(description="The Standard Webhooks secret (whsec_…) deliveries are signed with")


class WebhookOut(BaseModel):
    id: int
    template_id: int = Field(description="The agent's id")
    user_id: int
    url: str
    method: Literal["POST", "GET"]
    success_count: int = Field(description="Attempts the receiver answered with a 2xx")
    failure_count: int = Field(description="Attempts that failed (error status, timeout, refused address…)")
    status: Literal["active", "inactive"]
    disabled_reason: str | None = Field(description="Why the server turned it off (null: it did not)")
    disabled_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    deleted_at: Timestamp | None


class WebhookPage(Page):
    data: list[WebhookOut]


class WebhookCreate(BaseModel):
    url: str = Field(max_length=2048, description="https URL (http only for hosts in OPENTESS_WEBHOOK_ALLOW_HOSTS)")
    method: Literal["POST", "GET"] = Field(default="POST", description="POST: the execution as the body")
    status: Literal["active", "inactive"] = "active"


class WebhookUpdate(BaseModel):
    """Any of the fields; `status: active` turns a disabled webhook back on."""

    url: str | None = Field(default=None, max_length=2048)
    method: Literal["POST", "GET"] | None = None
    status: Literal["active", "inactive"] | None = None


class WebhookDeleted(BaseModel):
    message: str


class Attempt(BaseModel):
    attempt: int = Field(description="1 for the first try")
    created_at: Timestamp = Field(description="When it was made")
    success: bool
    status_code: int | None = Field(description="The receiver's HTTP status (null: no answer)")
    duration_ms: float | None
    error: str | None
    response: str | None = Field(description="The first kilobyte of the receiver's answer")


class Delivery(BaseModel):
    id: int
    webhook_id: int
    execution_id: int
    message_id: str = Field(description="The webhook-id header: the same on every attempt")
    status: Literal["pending", "succeeded", "failed", "cancelled"]
    attempts: list[Attempt]
    error: str | None
    created_at: Timestamp
    updated_at: Timestamp
    delivered_at: Timestamp | None


class DeliveryPage(Page):
    data: list[Delivery]
