"""The chat pipeline: store the question, ask the model, store the answer — and conversations."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import anyio
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chatlens.auth.service import Principal
from chatlens.chat import repository as repo
from chatlens.chat.schemas import ChatResponse, UsageRead
from chatlens.db.base import utcnow
from chatlens.db.batch import GroupCommit
from chatlens.errors import ChatlensError, Conflict, NotFound
from chatlens.inference.base import ChatMessage, Chunk, Usage
from chatlens.inference.intents import last_question
from chatlens.inference.pricing import Pricing, load_pricing
from chatlens.inference.service import ActiveModel
from chatlens.inference.tokens import count_prompt_tokens, count_tokens
from chatlens.models import (
    Conversation,
    ConversationMetrics,
    ConversationStatus,
    Message,
    MessageRole,
    MessageStatus,
)
from chatlens.observability.logging import bind
from chatlens.observability.metrics import Metrics
from chatlens.observability.tracing import current_ids, start_span
from chatlens.pagination import Cursor, Slice

log = structlog.get_logger(__name__)


TITLE_LENGTH = 60
# Storing an answer after the client left must not hang a worker if the database does.
_SAVE_TIMEOUT_S = 10.0


class InferenceFailed(ChatlensError):
    status_code = 502
    error_type = "inference_error"


def make_title(text: str) -> str:
    """The first ~60 characters of a message, cut at a word."""
    words = " ".join(text.split())
    if len(words) <= TITLE_LENGTH:
        return words
    cut = words[: TITLE_LENGTH + 1].rsplit(" ", 1)[0] if " " in words[:TITLE_LENGTH] else ""
    return (cut or words[:TITLE_LENGTH]).rstrip(" ,.;:-") + "…"


# -- conversations -------------------------------------------------------------------------


async def get_conversation_or_raise(
    session: AsyncSession, *, user: Principal, conversation_id: uuid.UUID
) -> Conversation:
    conversation = await repo.get_conversation(
        session, user_id=user.user_id, conversation_id=conversation_id
    )
    if conversation is None:
        raise NotFound("conversation not found")
    return conversation


async def create_conversation(
    session: AsyncSession,
    *,
    user: Principal,
    project_id: str,
    platform: str,
    external_user_id: str | None,
    title: str | None = None,
    metrics: Metrics | None = None,
) -> Conversation:
    conversation = Conversation(
        user_id=user.user_id,
        project_id=project_id,
        platform=platform,
        external_user_id=external_user_id,
        title=title,
    )
    await repo.add(session, conversation)
    await session.commit()
    log.info(
        "conversation_created",
        conversation_id=str(conversation.id),
        project_id=project_id,
        platform=platform,
    )
    if metrics is not None:
        metrics.conversations.labels(project_id, platform).inc()
    return conversation


async def list_conversations(
    session: AsyncSession,
    *,
    user: Principal,
    limit: int,
    cursor: Cursor | None,
    status: ConversationStatus | None,
    project_id: str | None,
) -> Slice[Conversation]:
    rows = await repo.list_conversations(
        session,
        user_id=user.user_id,
        limit=limit,
        after=cursor,
        status=status,
        project_id=project_id,
    )
    return Slice.of(rows, limit)


async def update_conversation(
    session: AsyncSession, *, user: Principal, conversation_id: uuid.UUID, title: str
) -> Conversation:
    conversation = await get_conversation_or_raise(
        session, user=user, conversation_id=conversation_id
    )
    conversation.title = title.strip()
    conversation.updated_at = utcnow()
    await session.flush()
    return conversation


async def delete_conversation(
    session: AsyncSession, *, user: Principal, conversation_id: uuid.UUID
) -> None:
    conversation = await get_conversation_or_raise(
        session, user=user, conversation_id=conversation_id
    )
    await repo.delete_conversation(session, conversation)
    log.info("conversation_deleted", conversation_id=str(conversation_id))


async def list_messages(
    session: AsyncSession,
    *,
    user: Principal,
    conversation_id: uuid.UUID,
    limit: int,
    cursor: Cursor | None,
) -> Slice[Message]:
    await get_conversation_or_raise(session, user=user, conversation_id=conversation_id)
    rows = await repo.list_messages(
        session, conversation_id=conversation_id, limit=limit, after=cursor
    )
    return Slice.of(rows, limit)


async def count_active_conversations(
    sessionmaker: async_sessionmaker[AsyncSession], *, window_s: int
) -> int:
    """Conversations with a message in the last `window_s` seconds."""
    async with sessionmaker() as session:
        return await repo.count_updated_since(session, since=utcnow() - timedelta(seconds=window_s))


# -- the pipeline --------------------------------------------------------------------------


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
    # The request's trace, stored on both messages so a row leads to its trace.
    trace_id: str | None = None
    span_id: str | None = None
    span: Span | None = None
    # The model asked for; None: the active model.
    model: str | None = None


def _as_context(messages: Sequence[Message]) -> list[ChatMessage]:
    return [
        ChatMessage(role=m.role.value, content=m.content)
        for m in messages
        if m.status is not MessageStatus.error and m.content
    ]


class ChatPipeline:
    """Runs turns against the configured backend and stores what they produce."""

    def __init__(
        self,
        *,
        active_model: ActiveModel,
        sessionmaker: async_sessionmaker[AsyncSession],
        history_messages: int,
        metrics: Metrics | None = None,
        log_content: bool = False,
        pricing: Pricing | None = None,
    ) -> None:
        # The model asked for on every turn, unless the turn names one; the backend it is of.
        self.active_model = active_model
        self.backend = active_model.backend
        self.started_at = time.time()
        self.pricing = pricing or load_pricing()
        self.sessionmaker = sessionmaker
        # Questions of new conversations and plain answers: committed in groups under load.
        engine: AsyncEngine = sessionmaker.kw["bind"]
        self.writes = GroupCommit(
            engine, sizes=metrics.db_commit_writes if metrics is not None else None
        )
        self.history_messages = history_messages
        self.metrics = metrics
        # Message text stays out of logs unless CHATLENS_LOG_MESSAGE_CONTENT (then redacted).
        self.log_content = log_content

    async def aclose(self) -> None:
        """Let queued writes commit (at shutdown, before the engine goes)."""
        await self.writes.aclose()

    async def start_turn(
        self,
        session: AsyncSession,
        *,
        user: Principal,
        text: str,
        conversation_id: uuid.UUID | None,
        project_id: str = "default",
        platform: str = "web",
        external_user_id: str | None = None,
        endpoint: str = "/chat",
        context: Sequence[ChatMessage] | None = None,
        model: str | None = None,
    ) -> Turn:
        """Store the user's message (committed before the model is called) and build the turn.

        `context`: what the model is shown, when the client sends the conversation itself
        (the v1 API); otherwise the stored history and `text`.
        """
        started = time.perf_counter()
        trace_id, span_id = current_ids()
        span = _pipeline_span(endpoint)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await self._start_turn(
                session,
                user=user,
                text=text,
                conversation_id=conversation_id,
                project_id=project_id,
                platform=platform,
                external_user_id=external_user_id,
                context=context,
                turn=Turn(
                    conversation_id=uuid.UUID(int=0),
                    user_id=user.user_id,
                    project_id=project_id,
                    platform=platform,
                    external_user_id=external_user_id,
                    context=[],
                    started=started,
                    endpoint=endpoint,
                    trace_id=trace_id,
                    span_id=span_id,
                    span=span,
                    model=model,
                ),
            )
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR))
            span.end()
            raise
        finally:
            otel_context.detach(token)

    async def _start_turn(
        self,
        session: AsyncSession,
        *,
        user: Principal,
        text: str,
        conversation_id: uuid.UUID | None,
        project_id: str,
        platform: str,
        external_user_id: str | None,
        context: Sequence[ChatMessage] | None,
        turn: Turn,
    ) -> Turn:
        now = utcnow()
        history: list[Message] = []
        if conversation_id is None:
            turn.conversation_id = uuid.uuid4()
        else:
            conversation = await get_conversation_or_raise(
                session, user=user, conversation_id=conversation_id
            )
            if context is None:
                history = await repo.recent_messages(
                    session, conversation_id=conversation.id, limit=self.history_messages - 1
                )
            if conversation.title is None:
                conversation.title = make_title(text)
            conversation.updated_at = now
            turn.conversation_id = conversation.id
            turn.project_id = conversation.project_id
            turn.platform = conversation.platform
            turn.external_user_id = conversation.external_user_id
        question: dict[str, Any] = {
            "id": uuid.uuid4(),
            "conversation_id": turn.conversation_id,
            "role": MessageRole.user,
            "content": text,
            "created_at": now,
            "project_id": turn.project_id,
            "prompt_tokens": count_tokens(text),
            "status": MessageStatus.complete,
            "trace_id": turn.trace_id,
            "span_id": turn.span_id,
        }
        # Nothing the user sent may be lost: it is durable before the model sees it.
        if conversation_id is None:
            opened: dict[str, Any] = {
                "id": turn.conversation_id,
                "user_id": user.user_id,
                "project_id": project_id,
                "platform": platform,
                "external_user_id": external_user_id,
                "title": make_title(text),
                "status": ConversationStatus.open,
                "created_at": now,
                "updated_at": now,
            }
            if session.in_transaction():
                # What the request did so far (an API key's last use) lets go of its
                # connection first: SQLite has one, and the group commit needs it.
                await session.commit()
            # Logged and counted once committed, also when this caller has gone by then.
            await self.writes.write(
                repo.NEW_CONVERSATION, (opened, question), committed=partial(self._opened, turn)
            )
        else:
            await repo.insert(session, Message, question)
            await session.commit()
        turn.context = (
            list(context)
            if context is not None
            else [*_as_context(history), ChatMessage(role="user", content=text)]
        )
        self._announce(turn)
        return turn

    def _opened(self, turn: Turn) -> None:
        log.info(
            "conversation_created",
            conversation_id=str(turn.conversation_id),
            project_id=turn.project_id,
            platform=turn.platform,
        )
        if self.metrics is not None:
            self.metrics.conversations.labels(turn.project_id, turn.platform).inc()

    def _announce(self, turn: Turn) -> None:
        """Log context and counters for a turn that is about to reach the model."""
        bind(
            conversation_id=str(turn.conversation_id),
            project_id=turn.project_id,
            platform=turn.platform,
        )
        if turn.span is not None:
            turn.span.set_attribute("gen_ai.conversation.id", str(turn.conversation_id))
        if self.metrics is not None:
            self.metrics.chat_requests.labels(turn.project_id, turn.platform).inc()

    async def start_regenerate(
        self,
        session: AsyncSession,
        *,
        user: Principal,
        conversation_id: uuid.UUID,
        endpoint: str = "/api/conversations/{conversation_id}/regenerate",
    ) -> Turn:
        """A turn answering the last question again; its answer replaces the last answer."""
        started = time.perf_counter()
        trace_id, span_id = current_ids()
        conversation = await get_conversation_or_raise(
            session, user=user, conversation_id=conversation_id
        )
        history = await repo.recent_messages(
            session, conversation_id=conversation.id, limit=self.history_messages + 1
        )
        replaces = None
        if history and history[-1].role is MessageRole.assistant:
            replaces = history.pop().id
        if not history or history[-1].role is not MessageRole.user:
            raise Conflict("there is no question in this conversation to answer again")
        # Release the connection before the model runs; the answer is stored by its own session.
        await session.commit()
        turn = Turn(
            conversation_id=conversation.id,
            user_id=user.user_id,
            project_id=conversation.project_id,
            platform=conversation.platform,
            external_user_id=conversation.external_user_id,
            context=_as_context(history[-self.history_messages :]),
            started=started,
            replaces=replaces,
            endpoint=endpoint,
            trace_id=trace_id,
            span_id=span_id,
            span=_pipeline_span(endpoint),
        )
        self._announce(turn)
        return turn

    def answer(self, turn: Turn) -> Answer:
        return Answer(self, turn)

    async def complete(self, turn: Turn) -> ChatResponse:
        """Run a turn to the end and return the stored answer (the non-streamed path)."""
        answer = self.answer(turn)
        try:
            async for _ in answer.deltas():
                pass
        finally:
            response = await answer.save()
        return response


def _pipeline_span(endpoint: str) -> Span:
    return start_span("chatlens.chat", "chat.pipeline", attributes={"chatlens.endpoint": endpoint})


@dataclass(slots=True)
class _AnswerRows:
    """An answer's rows, and the figures its metrics and log line need."""

    message: dict[str, Any]
    facts: dict[str, Any]  # the conversation_metrics row
    text: str
    stored_at: datetime
    complete: bool
    escalation: str | None
    intent: str | None
    confidence: float | None
    inference_ms: float
    ttft_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    estimated: bool


class Answer:
    """One model answer as it streams; `save()` stores it exactly once, however the stream ends."""

    def __init__(self, pipeline: ChatPipeline, turn: Turn) -> None:
        self.pipeline = pipeline
        self.turn = turn
        self.model = turn.model or pipeline.active_model.current
        self.parts: list[str] = []
        self.final: Chunk | None = None
        self.error: ChatlensError | None = None
        self.model_started: float | None = None
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self._saved: ChatResponse | None = None
        self._rows: _AnswerRows | None = None  # the rows, made once
        # The write: the group commit's, or an escalation's or regeneration's own task.
        self._written: asyncio.Future[Any] | None = None
        self._failure: Exception | None = None  # how save() failed, raised again
        self._late = False  # a save() gave up waiting for the write
        parent = trace.set_span_in_context(turn.span) if turn.span is not None else None
        self._parent = parent

    async def deltas(self) -> AsyncIterator[str]:
        """The answer's text pieces; a backend failure ends it with InferenceFailed."""
        backend = self.pipeline.backend
        span = start_span(
            "chatlens.chat",
            f"chat {self.model}",
            context=self._parent,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": backend.name,
                "gen_ai.request.model": self.model,
                "gen_ai.conversation.id": str(self.turn.conversation_id),
            },
        )
        # The span is current while the backend takes a step (it opens the upstream request
        # in the first, detects the intent in the last), never across our yields: the
        # consumer may resume this generator from another task's context.
        span_context = trace.set_span_in_context(span)
        stream = backend.stream(self.turn.context, model=self.model)
        self.model_started = time.perf_counter()
        try:
            while True:
                token = otel_context.attach(span_context)
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                if chunk.delta:
                    if self.first_token_at is None:
                        self.first_token_at = time.perf_counter()
                    self.parts.append(chunk.delta)
                    yield chunk.delta
                if chunk.usage is not None or chunk.finish_reason is not None:
                    self.final = chunk
                    if chunk.model:
                        self.model = chunk.model  # who answered: a fallback, a dated model id
        except ChatlensError as exc:
            self.error = exc
            span.record_exception(exc)
            raise
        except Exception as exc:
            log.error("inference_failed", exc_info=exc, backend=backend.name)
            span.record_exception(exc)
            self.error = InferenceFailed("the model failed to answer; try again")
            raise self.error from exc
        finally:
            self.finished_at = time.perf_counter()
            await stream.aclose()
            self._end_model_span(span)

    def _end_model_span(self, span: Span) -> None:
        final = self.final
        attributes: dict[str, AttributeValue] = {"gen_ai.response.model": self.model}
        if final is not None and final.usage is not None:
            attributes["chatlens.usage.estimated"] = final.usage.estimated
            attributes["gen_ai.usage.input_tokens"] = final.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = final.usage.completion_tokens
        if final is not None and final.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = (final.finish_reason,)
        span.set_attributes(attributes)
        if self.error is not None:
            span.set_status(Status(StatusCode.ERROR, self.error.message))
        span.end()

    @property
    def status(self) -> MessageStatus:
        if self.error is not None:
            return MessageStatus.error
        return MessageStatus.complete if self.final is not None else MessageStatus.incomplete

    @property
    def settled(self) -> bool:
        """Stored, or failed for good: another save() would only repeat the outcome."""
        return self._saved is not None or self._failure is not None

    async def save(self) -> ChatResponse:
        """Store the answer and its metrics row in one transaction, once: the rows are made
        and written once, and a second call returns the same answer or raises the same
        error, without waiting again."""
        if self._saved is not None:
            return self._saved
        if self._failure is not None:
            raise self._failure
        token = otel_context.attach(self._parent) if self._parent is not None else None
        try:
            # Shielded: after a client disconnect this runs inside a cancelled scope.
            with anyio.move_on_after(_SAVE_TIMEOUT_S, shield=True) as scope:
                self._saved = await self._store()
            if scope.cancelled_caught or self._saved is None:
                # The write goes on; its outcome is counted and logged when it lands.
                self._finish_when_written()
                log.error("answer_store_timeout", conversation_id=str(self.turn.conversation_id))
                raise InferenceFailed("the answer could not be stored in time")
        except Exception as exc:
            self._failure = exc
            self._end_span(exc)
            raise
        except BaseException as exc:  # cancelled from outside the shield (shutdown)
            self._finish_when_written()
            self._end_span(exc)
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
        self._end_span(self.error)
        return self._saved

    def _finish_when_written(self) -> None:
        """A save() stopped waiting: when the write lands, the answer is counted and logged
        as if it had waited (in the answer's trace context, which is current here)."""
        written, rows = self._written, self._rows
        if written is None or rows is None or self._late:
            return
        self._late = True

        def landed(future: asyncio.Future[bool]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            conversation_id = str(self.turn.conversation_id)
            if error is not None:
                log.error(
                    "answer_not_stored",
                    conversation_id=conversation_id,
                    error_type=type(error).__name__,
                )
            elif self._saved is None:
                self._saved = self._finish(rows, newly_escalated=future.result())
                self._failure = None  # stored after all
                log.warning("answer_stored_late", conversation_id=conversation_id)

        written.add_done_callback(landed)

    def _end_span(self, error: BaseException | None) -> None:
        """End the turn's span, once, with the error that ended the turn if any."""
        span, self.turn.span = self.turn.span, None
        if span is None:
            return
        if self.error is not None and error is self.error:  # recorded on the model's span
            span.set_status(Status(StatusCode.ERROR, self.error.message))
        elif error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    async def _store(self) -> ChatResponse:
        if self._rows is None:
            self._rows = self._prepare()
        rows = self._rows
        turn = self.turn
        if self._written is None:
            # Made once, and never cancelled with a caller that stops waiting: a write that
            # commits late is not lost, nor made twice.
            if rows.escalation is None and turn.replaces is None:
                touch = {"conversation_id": turn.conversation_id, "at": rows.stored_at}
                self._written = self.pipeline.writes.submit(
                    repo.COMPLETE_ANSWER if rows.complete else repo.ANSWER,
                    (touch, rows.message, rows.facts),
                )
            else:
                self._written = asyncio.ensure_future(self._write_in_session(rows))
        try:
            newly_escalated = bool(await asyncio.shield(self._written))
        except IntegrityError as exc:
            async with self.pipeline.sessionmaker() as session:
                if await repo.conversation_exists(session, turn.conversation_id):
                    raise
            # Deleted while the model was answering: the answer's row has nothing left to
            # belong to (its foreign key said so).
            raise NotFound("conversation not found") from exc
        return self._finish(rows, newly_escalated=newly_escalated)

    async def _write_in_session(self, rows: _AnswerRows) -> bool:
        """An escalation's or a regenerated answer's rows, in a session of their own; True
        when this answer escalated the conversation."""
        turn = self.turn
        newly_escalated = False
        async with self.pipeline.sessionmaker() as session, session.begin():
            if not await repo.touch_conversation(
                session, turn.conversation_id, at=rows.stored_at, first_response=rows.complete
            ):
                raise NotFound("conversation not found")
            if rows.escalation is not None:
                newly_escalated = await repo.escalate_conversation(
                    session, turn.conversation_id, at=rows.stored_at, reason=rows.escalation
                )
            if turn.replaces is not None:
                await repo.delete_message(session, turn.replaces)
            await repo.insert(session, Message, rows.message)
            await repo.insert(session, ConversationMetrics, rows.facts)
        return newly_escalated

    def _prepare(self) -> _AnswerRows:
        """The answer's rows and figures, made once."""
        turn = self.turn
        now = time.perf_counter()
        text = "".join(self.parts)
        final = self.final
        usage = final.usage if final is not None else None
        prompt_tokens = usage.prompt_tokens if usage else count_prompt_tokens(turn.context)
        completion_tokens = usage.completion_tokens if usage else count_tokens(text)
        model_started = self.model_started or now
        # Milliseconds to the microsecond, as stored, logged and observed alike.
        inference_ms = round(((self.finished_at or now) - model_started) * 1000, 3)
        ttft_ms = (
            round((self.first_token_at - model_started) * 1000, 3)
            if self.first_token_at is not None
            else None
        )
        escalation = final.escalation_reason if final is not None else None
        intent = final.intent if final is not None else None
        confidence = final.confidence if final is not None else None
        cost = self.pipeline.pricing.cost(
            self.model,
            Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cached_prompt_tokens=usage.cached_prompt_tokens if usage else 0,
            ),
        )
        status = self.status
        stored_at = utcnow()
        answer_id = uuid.uuid4()
        message: dict[str, Any] = {
            "id": answer_id,
            "conversation_id": turn.conversation_id,
            "role": MessageRole.assistant,
            "content": text,
            "created_at": stored_at,
            "trace_id": turn.trace_id,
            "span_id": turn.span_id,
            "project_id": turn.project_id,
            "model": self.model,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "inference_time_ms": inference_ms,
            "ttft_ms": ttft_ms,
            "intent": intent,
            "confidence": confidence,
            "cost_usd": cost,
            "status": status,
        }
        facts: dict[str, Any] = {
            "id": uuid.uuid4(),
            "timestamp": stored_at,
            "conversation_id": turn.conversation_id,
            "message_id": answer_id,
            "user_id": turn.user_id,
            "project_id": turn.project_id,
            "platform": turn.platform,
            "external_user_id": turn.external_user_id,
            "model": self.model,
            "intent": intent,
            "confidence": confidence,
            "response_time_ms": inference_ms,
            "ttft_ms": ttft_ms,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "tokens_used": prompt_tokens + completion_tokens,
            "cost_usd": cost,
            "resolved": False,
            "escalated": escalation is not None,
            "status": status.value,
        }
        return _AnswerRows(
            message=message,
            facts=facts,
            text=text,
            stored_at=stored_at,
            complete=status is MessageStatus.complete,
            escalation=escalation,
            intent=intent,
            confidence=confidence,
            inference_ms=inference_ms,
            ttft_ms=ttft_ms,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=cost,
            estimated=usage is None or usage.estimated,
        )

    def _finish(self, rows: _AnswerRows, *, newly_escalated: bool) -> ChatResponse:
        """Count, log and return a stored answer (once, whoever saw the write land first)."""
        if self._saved is not None:
            return self._saved
        turn = self.turn
        latency_ms = (time.perf_counter() - turn.started) * 1000
        metrics = self.pipeline.metrics
        if metrics is not None:
            self._record(
                metrics,
                intent=rows.intent,
                confidence=rows.confidence,
                inference_s=rows.inference_ms / 1000,
                ttft_s=None if rows.ttft_ms is None else rows.ttft_ms / 1000,
                prompt_tokens=rows.prompt_tokens,
                completion_tokens=rows.completion_tokens,
                cost=rows.cost,
                escalation=rows.escalation if newly_escalated else None,
            )
        content = (
            {"question": last_question(turn.context), "reply": rows.text}
            if self.pipeline.log_content
            else {}
        )
        answer_id = rows.message["id"]
        tokens = rows.prompt_tokens + rows.completion_tokens
        log.info(
            "message_processed",
            **content,
            user_id=str(turn.user_id),
            conversation_id=str(turn.conversation_id),
            session_id=str(turn.conversation_id),
            message_id=str(answer_id),
            project_id=turn.project_id,
            platform=turn.platform,
            intent=rows.intent,
            confidence=rows.confidence,
            response_time_ms=rows.inference_ms,
            ttft_ms=rows.ttft_ms,
            ai_tokens_used=tokens,
            usage_estimated=rows.estimated,
            cost_usd=float(rows.cost),
            ai_model=self.model,
            escalated=rows.escalation is not None,
            status=rows.message["status"].value,
        )
        return ChatResponse(
            conversation_id=turn.conversation_id,
            message_id=answer_id,
            reply=rows.text,
            intent=rows.intent,
            confidence=rows.confidence,
            escalated=rows.escalation is not None,
            model=self.model,
            usage=UsageRead(
                prompt_tokens=rows.prompt_tokens,
                completion_tokens=rows.completion_tokens,
                total_tokens=tokens,
            ),
            latency_ms=round(latency_ms, 3),
        )

    def _record(
        self,
        metrics: Metrics,
        *,
        intent: str | None,
        confidence: float | None,
        inference_s: float,
        ttft_s: float | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost: Decimal,
        escalation: str | None,
    ) -> None:
        """The turn's metrics, once it is stored."""
        turn, model = self.turn, self.model
        exemplar = {"trace_id": turn.trace_id} if turn.trace_id else None
        metrics.messages.labels(turn.platform, intent or "unknown").inc()
        metrics.response_time.labels("ai", turn.endpoint).observe(inference_s, exemplar)
        if ttft_s is not None:
            metrics.ai_time_to_first_token.labels(model).observe(ttft_s, exemplar)
        metrics.ai_tokens.labels(model, "prompt").inc(prompt_tokens)
        metrics.ai_tokens.labels(model, "completion").inc(completion_tokens)
        metrics.ai_cost.labels(model, turn.project_id).inc(float(cost))
        if confidence is not None:
            metrics.intent_confidence.labels(intent or "unknown").observe(confidence)
        if escalation is not None:
            metrics.escalations.labels(turn.platform, escalation).inc()
        if self.error is not None:
            metrics.errors.labels(self.error.error_type, "ai").inc()
        fallback_from = self.final.fallback_from if self.final is not None else None
        if fallback_from is not None:
            # The builtin bot answered, but the model failed: still a failure of the AI.
            metrics.errors.labels(fallback_from, "ai").inc()
