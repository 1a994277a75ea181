"""The webhooks capability's tables (imported by opentess.db.models, so that migrations see them).

A webhook (an agent's) → its deliveries (one per execution that ended: the outbox row, written
before anything is sent, with the stable ``message_id`` receivers deduplicate on) → their
attempts (each HTTP try: when, status code, duration, error)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from opentess.db.models import Base, IdType


class Webhook(Base):
    __tablename__ = "webhooks"
    __table_args__ = (
        Index("ix_webhooks_workspace_id", "workspace_id", "id"),
        Index("ix_webhooks_agent_id", "agent_id", "status"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(IdType, ForeignKey("workspaces.id"))
    agent_id: Mapped[int] = mapped_column(IdType, ForeignKey("agents.id"))
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id"))
    url: Mapped[str] = mapped_column(String(2048))
    method: Mapped[str] = mapped_column(String(8))  # POST | GET
    status: Mapped[str] = mapped_column(String(16))  # active | inactive
    # the Standard Webhooks signing secret (whsec_…): kept, since the server signs with it
    secret: Mapped[str] = mapped_column(String(100))
    success_count: Mapped[int] = mapped_column(Integer, default=0)  # attempts answered 2xx
    failure_count: Mapped[int] = mapped_column(Integer, default=0)  # attempts that failed
    # deliveries in a row that failed every attempt; reset by a success
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime)
    # executions that ended from this time on are delivered (set at creation and re-activation)
    active_since: Mapped[datetime] = mapped_column(DateTime)
    # the safety sweep's low-water mark: every execution of the agent below it has been looked at
    sweep_from: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # one delivery per webhook and execution, whoever notices the end first
        Index("uq_webhook_deliveries_execution", "webhook_id", "execution_id", unique=True),
        Index("ix_webhook_deliveries_webhook_id", "webhook_id", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(IdType, ForeignKey("webhooks.id"))
    execution_id: Mapped[int] = mapped_column(IdType, ForeignKey("executions.id"))
    message_id: Mapped[str] = mapped_column(String(64), unique=True)  # the webhook-id header
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)  # why it failed or was cancelled
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(IdType, ForeignKey("webhook_deliveries.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    success: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)  # the start of the receiver's answer
