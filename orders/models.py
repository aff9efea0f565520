"""The order store's tables: orders, events (the audit history) and anomalies.

* ``orders``: one row per (provider, external_order_id), the canonical status,
  the provider's raw status, a version bumped on every applied change, amounts
  as decimal strings, and the poll schedule (``next_poll_at``, indexed for open orders).
* ``events``: every callback, poll result, creation and manual action, applied
  or not: raw body, source, dedup key, which key verified it and what it
  covered, any unsigned claim, when it was observed, the decision; a replay of
  the same delivery is counted on its row (``seen_count``), not stored again.
  A partial unique index makes "one applied event per dedup key per order" a
  database guarantee, not only a code path.
* ``anomalies``: what operators must look at (conflicts, unknown statuses,
  amount mismatches, orders open past their horizon).

Timestamps are aware UTC in Python on every backend.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from orders.states import Status

ID = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes everywhere; SQLite stores them naive, in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("provider", "external_order_id", name="uq_orders_provider_external"),
        Index("ix_orders_provider_order_id", "provider", "provider_order_id"),
        # The sweep's indexes hold open orders only (``terminal_at`` is set exactly when an
        # order ends): a store of a million finished orders costs them nothing.
        Index(
            "ix_orders_open_due",
            "provider",
            "next_poll_at",
            sqlite_where=text("terminal_at IS NULL"),
            postgresql_where=text("terminal_at IS NULL"),
        ),
        Index(
            "ix_orders_open_unflagged",
            "provider",
            "created_at",
            sqlite_where=text("terminal_at IS NULL AND stale_flagged_at IS NULL"),
            postgresql_where=text("terminal_at IS NULL AND stale_flagged_at IS NULL"),
        ),
        Index("ix_orders_provider_status", "provider", "status"),
        Index("ix_orders_updated_at", "updated_at"),
        Index("ix_orders_stuck_due", "provider", "status", "status_at"),
        Index(
            "uq_orders_idempotency_key",
            "provider",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    external_order_id: Mapped[str] = mapped_column(String(128))
    provider_order_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default=Status.CREATED.value)
    provider_status: Mapped[str | None] = mapped_column(String(64))
    rank: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    fiat_amount: Mapped[str | None] = mapped_column(String(64))
    fiat_currency: Mapped[str | None] = mapped_column(String(16))
    crypto_amount: Mapped[str | None] = mapped_column(String(64))
    crypto_currency: Mapped[str | None] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    poll_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stale_flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    terminal_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Since when the order is in its canonical status (what "stuck" measures).
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Past the expected time for its provider and state (see the stuck settings), and why.
    stuck_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stuck_reason: Mapped[str | None] = mapped_column(String(200))
    # The partner's Idempotency-Key of the creation request, and a hash of its body.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))

    events: Mapped[list[EventRecord]] = relationship(
        back_populates="order", order_by="EventRecord.id", lazy="raise_on_sql"
    )
    anomalies: Mapped[list[Anomaly]] = relationship(
        back_populates="order", order_by="Anomaly.id", lazy="raise_on_sql"
    )


class EventRecord(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_order_id", "order_id"),
        Index(
            "uq_events_applied_dedup",
            "order_id",
            "dedup_key",
            unique=True,
            sqlite_where=text("decision = 'applied'"),
            postgresql_where=text("decision = 'applied'"),
        ),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    provider: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    dedup_key: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(40))
    provider_status: Mapped[str | None] = mapped_column(String(64))
    canonical_status: Mapped[str | None] = mapped_column(String(32))
    decision: Mapped[str] = mapped_column(String(20))
    from_status: Mapped[str] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    version_after: Mapped[int] = mapped_column(Integer)
    verified_by: Mapped[str | None] = mapped_column(String(200))
    fiat_amount: Mapped[str | None] = mapped_column(String(64))
    raw_body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # When the provider was seen in this state: an answer's request time, else the
    # arrival time (NULL on rows of the first release: read received_at).
    observed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Replays of the same delivery (same fingerprint) are counted here, not stored again.
    seen_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_status: Mapped[str | None] = mapped_column(String(64))  # unsigned, never applied
    covers: Mapped[str | None] = mapped_column(String(200))  # what the signature vouched for

    order: Mapped[Order] = relationship(back_populates="events", lazy="raise_on_sql")


class Anomaly(Base):
    __tablename__ = "anomalies"
    __table_args__ = (Index("ix_anomalies_order_id", "order_id"), Index("ix_anomalies_kind", "kind"))

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolution: Mapped[str | None] = mapped_column(Text)  # the operator's comment

    order: Mapped[Order] = relationship(back_populates="anomalies", lazy="raise_on_sql")


class Notification(Base):
    """The outbox: what the partner is to be told, written in the transaction of the
    change it tells of, delivered afterwards (in ``version`` order per order) and
    served by the events feed (``id`` is the feed's cursor)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_order_id", "order_id", "id"),
        Index("ix_notifications_due", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    kind: Mapped[str] = mapped_column(String(40))  # order.status_changed, order.stuck
    version: Mapped[int] = mapped_column(Integer)  # the order's version it tells of
    body: Mapped[str] = mapped_column(Text)  # the JSON payload, as signed and sent
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # None: nothing to do
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # dead-lettered
    last_error: Mapped[str | None] = mapped_column(String(300))
