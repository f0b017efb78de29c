"""A turn: one question to the model, what it is shown, and what answering it needs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry.context import Context

from chatlens.chat.repository import TurnWriter
from chatlens.db.availability import DatabaseOutage
from chatlens.errors import ChatlensError
from chatlens.inference.base import ChatMessage
from chatlens.inference.pricing import Pricing
from chatlens.inference.service import ActiveModel
from chatlens.models import Message, MessageStatus
from chatlens.observability.metrics import Metrics
from chatlens.shutdown import Shutdown


class InferenceFailed(ChatlensError):
    status_code = 502
    error_type = "inference_error"


class Interrupted(ChatlensError):
    """The service is shutting down: an answer cut off at the end of the grace period, or
    a new turn refused while it drains."""

    status_code = 503
    error_type = "shutting_down"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


@dataclass(slots=True)
class Turn:
    """One question to the model: where it belongs and what the model is shown."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID
    project_id: str
    platform: str
    external_user_id: str | None
    context: list[ChatMessage]
    started: float = field(default_factory=time.perf_counter)
    # Regenerate: the assistant message this turn's answer replaces.
    replaces: uuid.UUID | None = None
    endpoint: str = "/chat"
    # The request's trace, stored on both messages so a row leads to its trace; the
    # answer's spans are children of the request's span (`trace_context`).
    trace_id: str | None = None
    span_id: str | None = None
    trace_context: Context | None = None
    # The model asked for; None: the active model.
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Answering:
    """What answering a turn needs: the model, the row writer, prices and telemetry."""

    active_model: ActiveModel
    writer: TurnWriter
    pricing: Pricing
    metrics: Metrics | None
    # Message text stays out of logs unless CHATLENS_LOG_MESSAGE_CONTENT (then redacted).
    log_content: bool
    # Draining on SIGTERM: no new turns; answers in progress are tracked and may be cut.
    shutdown: Shutdown | None = None
    # Told when a stream finds the database unreachable: one warning per outage, a probe.
    outage: DatabaseOutage | None = None


def as_context(messages: Sequence[Message]) -> list[ChatMessage]:
    """Stored messages as the model is shown them (failed and empty answers left out)."""
    return [
        ChatMessage(role=m.role.value, content=m.content)
        for m in messages
        if m.status is not MessageStatus.error and m.content
    ]
