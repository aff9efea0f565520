"""notifications outbox; stuck orders; idempotent creation; anomaly resolutions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notifications_order_id", "notifications", ["order_id", "id"])
    op.create_index("ix_notifications_due", "notifications", ["next_attempt_at"])
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("status_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("stuck_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("stuck_reason", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
    # An order's last change is when it last moved (or was created): close enough for
    # the orders there are when this runs.
    op.execute("UPDATE orders SET status_at = COALESCE(terminal_at, updated_at, created_at)")
    op.create_index("ix_orders_updated_at", "orders", ["updated_at"])
    op.create_index("ix_orders_stuck_due", "orders", ["provider", "status", "status_at"])
    op.create_index(
        "uq_orders_idempotency_key",
        "orders",
        ["provider", "idempotency_key"],
        unique=True,
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    with op.batch_alter_table("anomalies") as batch:
        batch.add_column(sa.Column("resolution", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("anomalies") as batch:
        batch.drop_column("resolution")
    op.drop_index("uq_orders_idempotency_key", table_name="orders")
    op.drop_index("ix_orders_stuck_due", table_name="orders")
    op.drop_index("ix_orders_updated_at", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
        batch.drop_column("stuck_reason")
        batch.drop_column("stuck_at")
        batch.drop_column("status_at")
    op.drop_index("ix_notifications_due", table_name="notifications")
    op.drop_index("ix_notifications_order_id", table_name="notifications")
    op.drop_table("notifications")
