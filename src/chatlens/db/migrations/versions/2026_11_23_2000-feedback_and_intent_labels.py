"""feedback (ratings, CSAT, NPS) and operators' intent labels

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("subject", sa.String(length=36), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "rating",
                "csat",
                "nps",
                name="feedback_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_feedback_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_feedback_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
        sa.UniqueConstraint(
            "conversation_id", "kind", "subject", name=op.f("uq_feedback_conversation_id")
        ),
    )
    op.create_index("ix_feedback_kind_created", "feedback", ["kind", "created_at"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("labeled_intent", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("labeled_by", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("labeled_at")
        batch.drop_column("labeled_by")
        batch.drop_column("labeled_intent")
    op.drop_index("ix_feedback_kind_created", table_name="feedback")
    op.drop_table("feedback")
