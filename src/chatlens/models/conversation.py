from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from chatlens.db.base import IdMixin, Model, utcnow

# An escalation's free-text note, beside its coded reason: a few sentences for the operator.
ESCALATION_NOTE_MAX_CHARS = 500


class ConversationStatus(StrEnum):
    open = "open"
    resolved = "resolved"
    escalated = "escalated"


def str_enum(enum: type[StrEnum], name: str) -> Enum:
    """A portable enum column: VARCHAR plus a CHECK constraint on both databases."""
    return Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Conversation(IdMixin, Model):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_user_created", "user_id", "created_at", "id"),
        Index("ix_conversations_user_status_created", "user_id", "status", "created_at"),
        Index("ix_conversations_user_project_created", "user_id", "project_id", "created_at"),
        Index("ix_conversations_updated_at", "updated_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64), default="default")
    platform: Mapped[str] = mapped_column(String(32), default="web")
    external_user_id: Mapped[str | None] = mapped_column(String(128))
    title: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[ConversationStatus] = mapped_column(
        str_enum(ConversationStatus, "conversation_status"), default=ConversationStatus.open
    )
    escalation_reason: Mapped[str | None] = mapped_column(String(32))
    escalation_note: Mapped[str | None] = mapped_column(String(ESCALATION_NOTE_MAX_CHARS))
    outcome: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_response_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
