"""The chat pipeline: a turn's question stored (before the model is called), then answered."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from opentelemetry import context as otel_context
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatlens.auth.service import Principal
from chatlens.chat import conversations
from chatlens.chat import repository as repo
from chatlens.chat.answer import Answer
from chatlens.chat.conversations import get_conversation_or_raise, make_title
from chatlens.chat.repository import NewConversation, QuestionRow, TurnWriter
from chatlens.chat.schemas import ChatResponse
from chatlens.chat.turn import Answering, Interrupted, Turn, as_context
from chatlens.db.availability import DatabaseOutage
from chatlens.db.base import utcnow
from chatlens.errors import Conflict
from chatlens.inference.base import ChatMessage
from chatlens.inference.pricing import Pricing, load_pricing
from chatlens.inference.service import ActiveModel
from chatlens.inference.tokens import count_tokens
from chatlens.models import Message, MessageRole
from chatlens.observability.logging import bind
from chatlens.observability.metrics import Metrics
from chatlens.observability.tracing import current_ids
from chatlens.shutdown import Shutdown


class ChatPipeline:
    """Runs turns against the active model and stores what they produce."""

    def __init__(
        self,
        *,
        active_model: ActiveModel,
        sessionmaker: async_sessionmaker[AsyncSession],
        history_messages: int,
        metrics: Metrics | None = None,
        log_content: bool = False,
        pricing: Pricing | None = None,
        shutdown: Shutdown | None = None,
        outage: DatabaseOutage | None = None,
    ) -> None:
        self.started_at = time.time()
        self.history_messages = history_messages
        self.answering = Answering(
            active_model=active_model,
            writer=TurnWriter(
                sessionmaker, sizes=metrics.db_commit_writes if metrics is not None else None
            ),
            pricing=pricing or load_pricing(),
            metrics=metrics,
            log_content=log_content,
            shutdown=shutdown,
            outage=outage,
        )

    @property
    def active_model(self) -> ActiveModel:
        return self.answering.active_model

    @property
    def metrics(self) -> Metrics | None:
        return self.answering.metrics

    async def aclose(self) -> None:
        """Let queued writes commit (at shutdown, before the engine goes)."""
        await self.answering.writer.aclose()

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
        self._refuse_when_draining()
        started = time.perf_counter()
        trace_id, span_id = current_ids()
        turn = Turn(
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
            trace_context=otel_context.get_current(),
            model=model,
        )
        await self._store_question(
            session,
            user=user,
            text=text,
            conversation_id=conversation_id,
            turn=turn,
            history=context is None,
        )
        if context is not None:
            turn.context = list(context)
        self._announce(turn)
        return turn

    async def _store_question(
        self,
        session: AsyncSession,
        *,
        user: Principal,
        text: str,
        conversation_id: uuid.UUID | None,
        turn: Turn,
        history: bool,
    ) -> None:
        """The question, durable before the model sees it: nothing the user sent is lost.
        `history`: the model is shown the stored conversation (else the caller's context)."""
        now = utcnow()
        writer = self.answering.writer
        if conversation_id is None:
            turn.conversation_id = uuid.uuid4()
            if session.in_transaction():
                # What the request did so far (an API key's last use) lets go of its
                # connection first: SQLite has one, and the group commit needs it.
                await session.commit()
            # Logged and counted once committed, also when this caller has gone by then.
            await writer.open_conversation(
                NewConversation(
                    id=turn.conversation_id,
                    user_id=user.user_id,
                    project_id=turn.project_id,
                    platform=turn.platform,
                    external_user_id=turn.external_user_id,
                    title=make_title(text),
                    created_at=now,
                ),
                _question(turn, text, now),
                committed=partial(
                    conversations.opened,
                    self.metrics,
                    conversation_id=turn.conversation_id,
                    project_id=turn.project_id,
                    platform=turn.platform,
                ),
            )
            turn.context = [ChatMessage(role="user", content=text)]
            return
        conversation = await get_conversation_or_raise(
            session, user=user, conversation_id=conversation_id
        )
        earlier: list[Message] = (
            await repo.recent_messages(
                session, conversation_id=conversation.id, limit=self.history_messages - 1
            )
            if history
            else []
        )
        if conversation.title is None:
            conversation.title = make_title(text)
        conversation.updated_at = now
        turn.conversation_id = conversation.id
        turn.project_id = conversation.project_id
        turn.platform = conversation.platform
        turn.external_user_id = conversation.external_user_id
        await writer.add_question(session, _question(turn, text, now))
        await session.commit()
        turn.context = [*as_context(earlier), ChatMessage(role="user", content=text)]

    def _announce(self, turn: Turn) -> None:
        """Log context and counters for a turn that is about to reach the model."""
        bind(
            conversation_id=str(turn.conversation_id),
            project_id=turn.project_id,
            platform=turn.platform,
        )
        # The request's span says which conversation it served: a turn has no span of its
        # own (the server span parents its transactions and the model's span).
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("gen_ai.conversation.id", str(turn.conversation_id))
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
        self._refuse_when_draining()
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
            context=as_context(history[-self.history_messages :]),
            started=started,
            replaces=replaces,
            endpoint=endpoint,
            trace_id=trace_id,
            span_id=span_id,
            trace_context=otel_context.get_current(),
        )
        self._announce(turn)
        return turn

    def _refuse_when_draining(self) -> None:
        """No new turn once the service is stopping: another replica answers it."""
        shutdown = self.answering.shutdown
        if shutdown is not None and shutdown.draining:
            raise Interrupted("chatlens is shutting down; try again in a moment")

    def answer(self, turn: Turn) -> Answer:
        return Answer(self.answering, turn)

    async def complete(self, turn: Turn) -> ChatResponse:
        """Run a turn to the end and return the stored answer (the non-streamed path)."""
        return await self.answer(turn).complete()


def _question(turn: Turn, text: str, now: datetime) -> QuestionRow:
    return QuestionRow(
        id=uuid.uuid4(),
        conversation_id=turn.conversation_id,
        project_id=turn.project_id,
        content=text,
        created_at=now,
        prompt_tokens=count_tokens(text),
        trace_id=turn.trace_id,
        span_id=turn.span_id,
    )
