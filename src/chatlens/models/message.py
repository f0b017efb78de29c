from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chatlens.db.base import IdMixin, Model, utcnow
from chatlens.models.conversation import str_enum


class MessageRole(StrEnum):
    user = "user"
    assistant = "assistant"
    system = "system"


class MessageStatus(StrEnum):
    complete = "complete"
    incomplete = "incomplete"
    error = "error"


class Message(IdMixin, Model):
    """A stored chat message (StoredChatMessage): the turn plus everything needed to trace it."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_created", "conversation_id", "created_at", "id"),
        Index("ix_messages_trace_id", "trace_id"),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    role: Mapped[MessageRole] = mapped_column(str_enum(MessageRole, "message_role"))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    trace_id: Mapped[str | None] = mapped_column(String(32))
    span_id: Mapped[str | None] = mapped_column(String(16))
    project_id: Mapped[str] = mapped_column(String(64), default="default")
    model: Mapped[str | None] = mapped_column(String(128))
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    inference_time_ms: Mapped[float | None]
    ttft_ms: Mapped[float | None]
    intent: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None]
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 8))
    status: Mapped[MessageStatus] = mapped_column(
        str_enum(MessageStatus, "message_status"), default=MessageStatus.complete
    )
    # An operator's label of the true intent (PUT /api/messages/{id}/intent): intent accuracy.
    labeled_intent: Mapped[str | None] = mapped_column(String(64))
    labeled_by: Mapped[uuid.UUID | None]
    labeled_at: Mapped[datetime | None]
