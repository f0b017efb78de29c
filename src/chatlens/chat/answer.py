"""An answer's lifecycle: streamed from the model, stored exactly once however it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import anyio
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from sqlalchemy.exc import IntegrityError

from chatlens.chat import outcome as outcomes
from chatlens.chat.outcome import Outcome
from chatlens.chat.schemas import ChatResponse
from chatlens.chat.turn import Answering, InferenceFailed, Interrupted, Turn
from chatlens.db.availability import DatabaseUnavailable, is_database_unavailable
from chatlens.errors import ChatlensError
from chatlens.inference.base import Chunk
from chatlens.inference.errors import UpstreamError
from chatlens.models import MessageStatus
from chatlens.observability.context import mark_failed
from chatlens.observability.metrics import TURN_FAILURES
from chatlens.observability.tracing import start_span

log = structlog.get_logger(__name__)

# Storing an answer after the client left must not hang a worker if the database does.
SAVE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0


class Answer:
    """One model answer as it streams; `save()` stores it exactly once, however the stream ends."""

    def __init__(self, answering: Answering, turn: Turn) -> None:
        self.answering = answering
        self.turn = turn
        self.model = turn.model or answering.active_model.current
        self.parts: list[str] = []
        self.final: Chunk | None = None
        self.error: ChatlensError | None = None
        self.model_started: float | None = None
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self._saved: ChatResponse | None = None
        self._outcome: Outcome | None = None  # the row, made once
        # The write, made once and never cancelled with a caller that stops waiting.
        self._written: asyncio.Future[Any] | None = None
        self._failure: Exception | None = None  # how save() failed, raised again
        self._late = False  # a save() gave up waiting for the write
        self._recorded = False  # a store's failure is on the request's span
        self._parent = turn.trace_context  # the request's: its span parents the answer's
        self.streamed = False
        self._crashed = False  # an error of ours while streaming, told as internal_error
        self._counted = False  # its outcome counted (chat_turns_total)
        # A shutdown's grace period ended: the task waiting for the model is cancelled.
        self._interrupted = False
        self._waiting: asyncio.Task[Any] | None = None
        if answering.shutdown is not None:
            answering.shutdown.enter(self)

    async def stream(self) -> AsyncGenerator[str | ChatResponse | ChatlensError, None]:
        """The answer for a streamed response: its deltas, then the stored answer or the
        error that ended it. Stored on every ending, a client that went away included; the
        one place that counts a stream as active."""
        metrics = self.answering.metrics
        self.streamed = True
        if metrics is not None:
            metrics.sse_streams_active.inc()
        try:
            # Closed here, not whenever it is collected: the model's stream ends with ours.
            async with aclosing(self.deltas()) as deltas:
                async for delta in deltas:
                    yield delta
            yield await self.save()
        except ChatlensError as exc:
            yield exc
        except Exception as exc:
            self._crashed = True
            if is_database_unavailable(exc):
                # An outage, not a bug: the client is told which, in a typed error event,
                # and the outage is warned of once, not once per stream.
                if self.answering.outage is not None:
                    self.answering.outage.failed(exc, refused=False)
                log.info("stream_failed", error_type=DatabaseUnavailable.error_type)
                yield DatabaseUnavailable()
            else:
                log.error("stream_failed", exc_info=exc)
                yield ChatlensError("internal server error")
        finally:
            try:
                if not self.settled:  # stored or failed above: already told and logged
                    await self.save()
            except Exception as exc:
                log.error("answer_not_stored", exc_info=exc)
            self._count()
            if metrics is not None:
                metrics.sse_streams_active.dec()

    async def complete(self) -> ChatResponse:
        """Run the answer to the end and return it stored (the non-streamed response)."""
        try:
            async with aclosing(self.deltas()) as deltas:
                async for _ in deltas:
                    pass
        finally:
            try:
                response = await self.save()
            finally:
                self._count()
        return response

    @property
    def outcome(self) -> str:
        """How the turn ended (one of TURN_OUTCOMES), whatever the HTTP status said."""
        error = self._failure if self._failure is not None else self.error
        if self._crashed:
            return "failed_internal"
        if error is None:
            return "answered" if self.final is not None else "client_disconnected"
        if isinstance(error, Interrupted):
            return "interrupted"
        if isinstance(error, ChatlensError) and error.status_code < 500:
            return "rejected"
        return "failed_upstream" if isinstance(error, UpstreamError) else "failed_internal"

    def _count(self) -> None:
        """Count the turn's outcome once; a stream that failed after its 200 is a failed
        response to the SLA. The turn is over: a shutdown no longer waits for it."""
        if self._counted:
            return
        self._counted = True
        if self.answering.shutdown is not None:
            self.answering.shutdown.leave(self)
        outcome = self.outcome
        if self.streamed and outcome in TURN_FAILURES:
            mark_failed()
        metrics = self.answering.metrics
        if metrics is not None:
            metrics.chat_turns.labels(outcome, "true" if self.streamed else "false").inc()

    async def deltas(self) -> AsyncGenerator[str, None]:
        """The answer's text pieces; a backend failure ends it with InferenceFailed."""
        backend = self.answering.active_model.backend
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
                if self._interrupted:
                    raise _interrupted()
                token = otel_context.attach(span_context)
                self._waiting = asyncio.current_task()
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    # Ours alone (a client that left cancels too): the shutdown cut it.
                    waiting = self._waiting
                    if self._interrupted and waiting is not None and waiting.uncancel() == 0:
                        raise _interrupted() from None
                    raise
                finally:
                    self._waiting = None
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
            self._end_model_span(span)
            # The backend's own clean-up (an upstream response closed), also for a client
            # that went away, whose cancelled scope would cancel it; bounded.
            with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await stream.aclose()

    def interrupt(self) -> None:
        """The shutdown's grace period is over: end with an error, told and stored."""
        self._interrupted = True
        if self._waiting is not None:
            self._waiting.cancel("the service is shutting down")

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
        if isinstance(self.error, Interrupted):
            return MessageStatus.incomplete  # cut off by a shutdown, as by a client leaving
        if self.error is not None:
            return MessageStatus.error
        return MessageStatus.complete if self.final is not None else MessageStatus.incomplete

    @property
    def finish_reason(self) -> str:
        """Why the model stopped, in OpenAI's words ("stop" unless it said otherwise)."""
        reason = self.final.finish_reason if self.final is not None else None
        return reason or "stop"

    @property
    def settled(self) -> bool:
        """Stored, or failed for good: another save() would only repeat the outcome."""
        return self._saved is not None or self._failure is not None

    async def save(self) -> ChatResponse:
        """Store the answer and its turn's row in one transaction, once: the row is made
        and written once, and a second call returns the same answer or raises the same
        error, without waiting again."""
        if self._saved is not None:
            return self._saved
        if self._failure is not None:
            raise self._failure
        token = otel_context.attach(self._parent) if self._parent is not None else None
        try:
            # Shielded: after a client disconnect this runs inside a cancelled scope.
            with anyio.move_on_after(SAVE_TIMEOUT_S, shield=True) as scope:
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
        written, outcome = self._written, self._outcome
        if written is None or outcome is None or self._late:
            return
        self._late = True

        def landed(future: asyncio.Future[Any]) -> None:
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
                self._saved = self._finish(outcome, newly_escalated=bool(future.result()))
                self._failure = None  # stored after all
                log.warning("answer_stored_late", conversation_id=conversation_id)

        written.add_done_callback(landed)

    def _end_span(self, error: BaseException | None) -> None:
        """Record, once, on the request's span, an error that ended the turn after the model
        (the model's own errors are on its span): a store that failed or gave up."""
        if error is None or error is self.error or self._recorded:
            return
        self._recorded = True
        span = trace.get_current_span(self._parent)
        if span.is_recording():  # a client that went away: the request's span has ended
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR))

    async def _store(self) -> ChatResponse:
        if self._outcome is None:
            self._outcome = outcomes.make_outcome(
                self.answering,
                self.turn,
                model=self.model,
                text="".join(self.parts),
                final=self.final,
                status=self.status,
                model_started=self.model_started,
                first_token_at=self.first_token_at,
                finished_at=self.finished_at,
            )
        outcome = self._outcome
        writer = self.answering.writer
        if self._written is None:
            self._written = writer.write_answer(outcome.row)
        try:
            newly_escalated = bool(await asyncio.shield(self._written))
        except IntegrityError as exc:
            explained = await writer.explain(exc, self.turn.conversation_id)
            if explained is exc:
                raise
            raise explained from exc
        return self._finish(outcome, newly_escalated=newly_escalated)

    def _finish(self, outcome: Outcome, *, newly_escalated: bool) -> ChatResponse:
        """Count, log and return a stored answer (once, whoever saw the write land first)."""
        if self._saved is not None:
            return self._saved
        return outcomes.finish(
            self.answering,
            self.turn,
            outcome,
            final=self.final,
            error=self.error,
            newly_escalated=newly_escalated,
        )


def _interrupted() -> Interrupted:
    return Interrupted("chatlens was restarted before the answer was complete; ask again")
