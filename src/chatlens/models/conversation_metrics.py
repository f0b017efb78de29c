from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from chatlens.db.base import IdMixin, Model, utcnow


class ConversationMetrics(IdMixin, Model):
    """Fact table, one row per assistant turn; what reports and exports read.

    A row is written when its turn is stored. Only two columns change later, on every row
    of the conversation: `satisfaction_score` when a CSAT score is given (the latest one),
    and `resolved` when the conversation is resolved with an outcome other than abandoned.
    It keeps no foreign keys: a turn that happened stays counted when its conversation is
    deleted, and the rows can be shipped as they are to a column store.
    """

    __tablename__ = "conversation_metrics"
    __table_args__ = (
        Index("ix_conversation_metrics_timestamp", "timestamp"),
        Index("ix_conversation_metrics_project_timestamp", "project_id", "timestamp"),
        Index("ix_conversation_metrics_conversation_id", "conversation_id"),
    )

    timestamp: Mapped[datetime] = mapped_column(default=utcnow)
    conversation_id: Mapped[uuid.UUID]
    message_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID]
    project_id: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(32))
    external_user_id: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    intent: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None]
    response_time_ms: Mapped[float]
    ttft_ms: Mapped[float | None]
    prompt_tokens: Mapped[int]
    completion_tokens: Mapped[int]
    tokens_used: Mapped[int]
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 8))
    satisfaction_score: Mapped[int | None]
    resolved: Mapped[bool] = mapped_column(default=False)
    escalated: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16))
