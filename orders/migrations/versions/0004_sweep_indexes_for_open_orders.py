"""the sweep's indexes hold open orders only

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

The sweep claims due orders by ``next_poll_at`` and looks for stale ones by
``created_at``; with full indexes (or none) a store of a million finished orders
made both scan or sort them (hundreds of milliseconds per sweep on SQLite, whose
planner has no statistics). Partial indexes on ``terminal_at IS NULL`` hold the
open orders only. ``terminal_at`` is set whenever an order ends; orders ended
before it always was get it here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENDED_WITHOUT_A_TIME = (
    "UPDATE orders SET terminal_at = COALESCE(updated_at, created_at) "
    "WHERE status IN ('SUCCESS', 'FAILED', 'REFUNDED', 'EXPIRED') AND terminal_at IS NULL"
)
OPEN = "terminal_at IS NULL"
OPEN_UNFLAGGED = "terminal_at IS NULL AND stale_flagged_at IS NULL"


def upgrade() -> None:
    op.execute(ENDED_WITHOUT_A_TIME)
    op.create_index(
        "ix_orders_open_due",
        "orders",
        ["provider", "next_poll_at"],
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_index(
        "ix_orders_open_unflagged",
        "orders",
        ["provider", "created_at"],
        sqlite_where=sa.text(OPEN_UNFLAGGED),
        postgresql_where=sa.text(OPEN_UNFLAGGED),
    )
    op.drop_index("ix_orders_next_poll_at", table_name="orders")


def downgrade() -> None:
    op.create_index("ix_orders_next_poll_at", "orders", ["next_poll_at"])
    op.drop_index("ix_orders_open_unflagged", table_name="orders")
    op.drop_index("ix_orders_open_due", table_name="orders")
