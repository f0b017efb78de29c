"""users seen through the external auth service

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("external_id", sa.String(length=128), nullable=True))
        batch.create_unique_constraint(op.f("uq_users_external_id"), ["external_id"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("uq_users_external_id"), type_="unique")
        batch.drop_column("external_id")
