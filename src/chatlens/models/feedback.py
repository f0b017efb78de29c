from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chatlens.db.base import IdMixin, Model, utcnow
from chatlens.models.conversation import str_enum


class FeedbackKind(StrEnum):
    rating = "rating"  # an answer's quality: score 1 (up) or 0 (down)
    csat = "csat"  # 1-5, one per conversation
    nps = "nps"  # 0-10, one per conversation


class Feedback(IdMixin, Model):
    """A customer's rating of an answer, or CSAT/NPS of a conversation; a second replaces it."""

    __tablename__ = "feedback"
    __table_args__ = (
        # One of each kind per subject: the rated message's id, or "" for the conversation.
        UniqueConstraint("conversation_id", "kind", "subject"),
        Index("ix_feedback_kind_created", "kind", "created_at"),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE")
    )
    subject: Mapped[str] = mapped_column(String(36))
    kind: Mapped[FeedbackKind] = mapped_column(str_enum(FeedbackKind, "feedback_kind"))
    score: Mapped[int]
    comment: Mapped[str | None] = mapped_column(Text)
    critical: Mapped[bool] = mapped_column(default=False)
    # The rated answer's trace: a bad answer leads straight to what happened.
    trace_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
