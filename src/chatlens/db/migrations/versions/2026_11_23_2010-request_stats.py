"""request stats per minute, for the SLA

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 20:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BOUNDS = (100, 250, 500, 1000, 2000, 5000, 10000)


def upgrade() -> None:
    op.create_table(
        "request_stats",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("route", sa.String(length=255), nullable=False),
        sa.Column("status_class", sa.String(length=3), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("latency_sum_ms", sa.Double(), nullable=False),
        *(sa.Column(f"le_{bound}", sa.Integer(), nullable=False) for bound in _BOUNDS),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_stats")),
    )
    op.create_index("ix_request_stats_minute", "request_stats", ["minute"])


def downgrade() -> None:
    op.drop_index("ix_request_stats_minute", table_name="request_stats")
    op.drop_table("request_stats")
