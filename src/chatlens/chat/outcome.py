"""An answer's outcome: its row, made once, then its metrics, its log line and its response."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import structlog

from chatlens.chat.repository import AnswerRow
from chatlens.chat.schemas import ChatResponse, UsageRead
from chatlens.chat.turn import Answering, Turn
from chatlens.db.base import utcnow
from chatlens.errors import ChatlensError
from chatlens.inference.base import MAX_TOKENS, MODEL_NAME_CHARS, Chunk, Usage
from chatlens.inference.intents import last_question
from chatlens.inference.tokens import count_prompt_tokens, count_tokens
from chatlens.models import MessageStatus
from chatlens.observability.metrics import Metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """An answer as it is stored, and whether its token counts are estimated."""

    row: AnswerRow
    estimated: bool


def _ms(seconds: float) -> float:
    """Milliseconds to the microsecond, as stored, logged and observed alike."""
    return round(seconds * 1000, 3)


def _tokens(count: int) -> int:
    return min(max(0, count), MAX_TOKENS)


def make_outcome(
    answering: Answering,
    turn: Turn,
    *,
    model: str,
    text: str,
    final: Chunk | None,
    status: MessageStatus,
    model_started: float | None,
    first_token_at: float | None,
    finished_at: float | None,
) -> Outcome:
    """The answer's row and figures: tokens (counted when the model gave none), times, cost."""
    now = time.perf_counter()
    usage = final.usage if final is not None else None
    # Bounded here too, whichever backend reported them: the row must be storable.
    prompt_tokens = _tokens(usage.prompt_tokens if usage else count_prompt_tokens(turn.context))
    completion_tokens = _tokens(usage.completion_tokens if usage else count_tokens(text))
    model = model[:MODEL_NAME_CHARS]
    started = model_started or now
    cost = answering.pricing.cost(
        model,
        Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens if usage else 0,
        ),
    )
    row = AnswerRow(
        id=uuid.uuid4(),
        conversation_id=turn.conversation_id,
        user_id=turn.user_id,
        project_id=turn.project_id,
        platform=turn.platform,
        external_user_id=turn.external_user_id,
        content=text,
        created_at=utcnow(),
        trace_id=turn.trace_id,
        span_id=turn.span_id,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        inference_time_ms=_ms((finished_at or now) - started),
        ttft_ms=_ms(first_token_at - started) if first_token_at is not None else None,
        intent=final.intent if final is not None else None,
        confidence=final.confidence if final is not None else None,
        cost_usd=cost,
        status=status,
        escalation=final.escalation_reason if final is not None else None,
        replaces=turn.replaces,
    )
    return Outcome(row=row, estimated=usage is None or usage.estimated)


def finish(
    answering: Answering,
    turn: Turn,
    outcome: Outcome,
    *,
    final: Chunk | None,
    error: ChatlensError | None,
    newly_escalated: bool,
) -> ChatResponse:
    """Count and log a stored answer, and the response that tells its client."""
    row = outcome.row
    if answering.metrics is not None:
        try:
            _record(
                answering.metrics,
                turn,
                row,
                error=error,
                fallback_from=final.fallback_from if final is not None else None,
                escalation=row.escalation if newly_escalated else None,
                rejected=final.rejected if final is not None else (),
            )
        except Exception as exc:  # stored and sent: a metric must not make it a 500 (a retry
            # would store it twice)
            log.error("answer_metrics_failed", exc_info=exc, message_id=str(row.id))
    content = (
        {"question": last_question(turn.context), "reply": row.content}
        if answering.log_content
        else {}
    )
    tokens = row.prompt_tokens + row.completion_tokens
    log.info(
        "message_processed",
        **content,
        user_id=str(turn.user_id),
        conversation_id=str(turn.conversation_id),
        session_id=str(turn.conversation_id),
        message_id=str(row.id),
        project_id=turn.project_id,
        platform=turn.platform,
        intent=row.intent,
        confidence=row.confidence,
        response_time_ms=row.inference_time_ms,
        ttft_ms=row.ttft_ms,
        ai_tokens_used=tokens,
        usage_estimated=outcome.estimated,
        cost_usd=float(row.cost_usd),
        ai_model=row.model,
        escalated=row.escalation is not None,
        status=row.status.value,
    )
    return ChatResponse(
        conversation_id=turn.conversation_id,
        message_id=row.id,
        reply=row.content,
        intent=row.intent,
        confidence=row.confidence,
        escalated=row.escalation is not None,
        model=row.model,
        usage=UsageRead(
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=tokens,
        ),
        latency_ms=_ms(time.perf_counter() - turn.started),
    )


def _record(
    metrics: Metrics,
    turn: Turn,
    row: AnswerRow,
    *,
    error: ChatlensError | None,
    fallback_from: str | None,
    escalation: str | None,
    rejected: tuple[str, ...],
) -> None:
    """The turn's metrics, once its answer is stored."""
    model, intent = row.model, row.intent
    exemplar = {"trace_id": turn.trace_id} if turn.trace_id else None
    metrics.messages.labels(turn.platform, intent or "unknown").inc()
    metrics.response_time.labels("ai", turn.endpoint).observe(
        row.inference_time_ms / 1000, exemplar
    )
    if row.ttft_ms is not None:
        metrics.ai_time_to_first_token.labels(model).observe(row.ttft_ms / 1000, exemplar)
    metrics.ai_tokens.labels(model, "prompt").inc(row.prompt_tokens)
    metrics.ai_tokens.labels(model, "completion").inc(row.completion_tokens)
    metrics.ai_cost.labels(model, turn.project_id).inc(float(row.cost_usd))
    if row.confidence is not None:
        metrics.intent_confidence.labels(intent or "unknown").observe(row.confidence)
    if escalation is not None:
        metrics.escalations.labels(turn.platform, escalation).inc()
    if error is not None:
        metrics.errors.labels(error.error_type, "ai").inc()
    if fallback_from is not None:
        # The builtin bot answered, but the model failed: still a failure of the AI.
        metrics.errors.labels(fallback_from, "ai").inc()
    for name in rejected:
        metrics.upstream_values_rejected.labels(name).inc()
