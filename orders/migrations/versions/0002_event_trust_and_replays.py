"""events: observation time, claims, coverage and replay counts; no claims in order details

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("seen_count", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("claimed_status", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("covers", sa.String(length=200), nullable=True))
    # An unsigned claim was kept in the order's details by the previous release: it
    # never belonged there (it is in the event's raw body, which the timeline shows).
    orders = sa.table("orders", sa.column("id", sa.Integer()), sa.column("details", sa.JSON()))
    conn = op.get_bind()
    rows = conn.execute(sa.select(orders.c.id, orders.c.details)).all()
    for order_id, details in rows:
        if isinstance(details, str):
            details = json.loads(details)
        if isinstance(details, dict) and "claimed_status" in details:
            kept = {k: v for k, v in details.items() if k != "claimed_status"}
            conn.execute(sa.update(orders).where(orders.c.id == order_id).values(details=kept))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("covers")
        batch.drop_column("claimed_status")
        batch.drop_column("seen_count")
        batch.drop_column("last_seen_at")
        batch.drop_column("observed_at")
