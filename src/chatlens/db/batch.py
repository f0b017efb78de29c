"""Group commit: the writes of concurrent requests share one transaction.

A chat turn writes twice (the question before the model is asked, the answer after), and
each write on its own pays for a connection, a transaction and a round trip per statement
(SQLite's driver runs every call on its own thread). `GroupCommit.write` queues a write and
returns once it is committed. Drain tasks take the queue: the writes that arrived while a
transaction ran go in the next one, with each statement run once for all of them (an
executemany). There is no waiting for company: a write that finds a drain free is committed
at once, so a quiet service sees the latency it had before.

SQLite has one connection and one drain, and a transaction goes whole to a writer thread, in
one hop (`chatlens.db.sqlite_thread`). On a database with a connection pool, as many
drains run as the pool has connections, so one slow transaction does not hold up the
others' writes; writes are grouped once all of them are busy.

Every caller keeps its own outcome. When a grouped transaction fails, it is rolled back and
each write is retried alone, so one bad write (a conversation deleted meanwhile, say)
fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from time import time_ns
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable

from chatlens.db.sqlite_thread import SqliteWriter
from chatlens.observability.metrics import Histogram
from chatlens.observability.tracing import (
    SQL_SCOPE,
    db_namespace,
    db_operation,
    db_span_name,
    end_with_error,
    start_span,
    statement_operation,
)

log = structlog.get_logger(__name__)

# Statements run in this order, each with one row of parameters. The same tuple object is
# passed for every write of a kind: writes are grouped by its identity.
Statements = tuple[Executable, ...]


@dataclass(slots=True)
class _Write:
    statements: Statements
    params: Sequence[dict[str, Any]]
    # The caller's trace context: the transaction's span joins the caller's trace.
    context: otel_context.Context
    future: asyncio.Future[None]
    # Runs once the write is committed, in the caller's context, waiting caller or not.
    committed: Callable[[], object] | None = None


# The name of the tasks that commit queued writes, as asyncio.all_tasks() shows them.
DRAIN_TASK_NAME = "chatlens-group-commit"


class GroupCommit:
    """Commits queued writes, as many per transaction as are waiting (up to `max_batch`)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = 64,
        sizes: Histogram | None = None,
        drains: int | None = None,
        executor: Executor | None = None,
    ) -> None:
        """`executor`: on an SQLite file, the writer thread's (see `SqliteWriter`)."""
        self._engine = engine
        self._sizes = sizes  # how many writes each committed transaction took
        self._max_batch = max_batch
        # One per pooled connection (SQLite: one); `drains` overrides.
        size = getattr(engine.pool, "size", None)
        pooled = size() if callable(size) and engine.dialect.name != "sqlite" else 1
        # How many transactions may run at once.
        self.max_drains = max(1, drains if drains is not None else pooled)
        self._pending: list[_Write] = []
        self._namespace = db_namespace(engine.url.database)
        self._summaries: dict[Statements, _Summary] = {}
        self._drains: set[asyncio.Task[None]] = set()
        # On an SQLite file, the thread that runs the transactions; None elsewhere.
        usable = SqliteWriter.usable(engine)
        self.writer = SqliteWriter(engine, executor=executor) if usable else None

    async def write(
        self,
        statements: Statements,
        params: Sequence[dict[str, Any]],
        *,
        committed: Callable[[], object] | None = None,
    ) -> None:
        """Run `statements` (one row of `params` each) and return once they are committed.

        A caller cancelled while it waits does not cancel the write: it is committed anyway,
        and `committed` (what the caller logs and counts for it) runs then all the same.
        """
        # Cancelling the caller cancels this future, not the write; `_settle` skips it.
        await self.submit(statements, params, committed=committed)

    @property
    def queued(self) -> int:
        """Writes waiting for a transaction (not counting those in one now)."""
        return len(self._pending)

    def submit(
        self,
        statements: Statements,
        params: Sequence[dict[str, Any]],
        *,
        committed: Callable[[], object] | None = None,
    ) -> asyncio.Future[None]:
        """Queue a write; the future is done once it is committed (or failed). Await it
        shielded to keep it for a second waiter."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if committed is not None:  # the caller's log fields and trace go with it
            committed = partial(contextvars.copy_context().run, committed)
        self._pending.append(
            _Write(statements, params, otel_context.get_current(), future, committed)
        )
        if len(self._drains) < self.max_drains:
            # A context of its own: the drain outlives the request that started it.
            drain = loop.create_task(
                self._drain(), name=DRAIN_TASK_NAME, context=contextvars.Context()
            )
            self._drains.add(drain)
            drain.add_done_callback(self._gone)
        return future

    async def aclose(self) -> None:
        """Wait for the queued writes, then close SQLite's writer thread (at shutdown, before
        the engine is disposed). A write that comes later is still committed."""
        while self._drains:
            # `wait`, not `await`: a drain that was cancelled must not stop the shutdown.
            await asyncio.wait(set(self._drains))
        if self.writer is not None:
            await self.writer.aclose()

    async def _drain(self) -> None:
        batch: list[_Write] = []
        committing: asyncio.Future[None] | None = None
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                # A task of its own, awaited shielded: a transaction can still commit after
                # its drain is cancelled (SQLite's thread finishes what it was given), and
                # its writes are then told how it ended, not that they were cancelled.
                committing = asyncio.ensure_future(self._commit(batch))
                await asyncio.shield(committing)
            batch = []
        finally:
            # At once, not in a done callback: a write queued before that ran would find
            # every drain taken and none coming back for it.
            task = asyncio.current_task()
            if task is not None:
                self._drains.discard(task)
            if batch:  # cancelled in the middle of a transaction
                if committing is not None and not committing.done():
                    committing.add_done_callback(partial(_abandon, batch))
                else:
                    _abandon(batch)
            if not self._drains:
                self._fail_pending()

    def _gone(self, drain: asyncio.Task[None]) -> None:
        # A drain cancelled before it ever ran has no `finally` of its own.
        self._drains.discard(drain)
        if drain.cancelled() and not self._drains:
            self._fail_pending()

    def _fail_pending(self) -> None:
        """No drain is left (they were cancelled, at shutdown): nobody may wait forever."""
        for write in self._pending:
            _settle(write, asyncio.CancelledError())
        self._pending.clear()

    async def _commit(self, batch: list[_Write]) -> None:
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        kinds = _by_kind(batch)

        def run(connection: Connection) -> None:
            for statements, writes in kinds:
                for index, statement in enumerate(statements):
                    connection.execute(statement, [write.params[index] for write in writes])

        spans = self._start_spans(batch, kinds)
        try:
            await self._transaction(run)
        except Exception as exc:
            _end_spans(spans, exc)
            log.warning("write_batch_failed", writes=len(batch), error_type=type(exc).__name__)
            for write in batch:
                await self._alone(write)
            return
        except BaseException as exc:
            _end_spans(spans, exc)
            raise
        _end_spans(spans, None)  # before the callers hear of it: within their spans
        for write in batch:
            _settle(write, None)
        try:
            self._committed(len(batch))
        except Exception as exc:  # observability never fails a committed write
            log.error("write_not_observed", error_type=type(exc).__name__)

    def _start_spans(
        self, batch: list[_Write], kinds: list[tuple[Statements, list[_Write]]]
    ) -> list[trace.Span]:
        """The transaction's span in the trace of each of its writes: one transaction, seen
        from every turn that waited for it. When several share it, each span links to the
        first recorded one."""
        operations: list[str] = []
        texts: list[str] = []
        for statements, writes in kinds:
            summary = self._summary(statements)
            operations.extend(summary.operations * len(writes))
            texts.append(summary.text)
        operation = db_operation(operations)
        attributes: dict[str, AttributeValue] = {
            "db.system.name": self._engine.dialect.name,
            "db.namespace": self._namespace,
            "db.operation.name": operation,
            "db.query.text": ";\n".join(texts),
        }
        if len(operations) > 1:
            attributes["db.operation.batch.size"] = len(operations)
        if len(batch) > 1:
            attributes["chatlens.db.group_commit.writes"] = len(batch)
        name = db_span_name(operation, self._namespace)
        started = time_ns()  # one transaction: one start
        spans = [
            start_span(
                SQL_SCOPE,
                name,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                context=write.context,
                start_time=started,
            )
            for write in batch
        ]
        if len(spans) > 1:
            first = next((span for span in spans if span.is_recording()), None)
            if first is not None:
                link = first.get_span_context()
                for span in spans:
                    if span is not first and span.is_recording():
                        span.add_link(link, {"chatlens.db.group_commit.first": True})
        return spans

    def _summary(self, statements: Statements) -> _Summary:
        """A kind of write's operations and SQL text, worked out once."""
        summary = self._summaries.get(statements)
        if summary is None:
            dialect = self._engine.dialect
            summary = _Summary(
                operations=tuple(statement_operation(s) for s in statements),
                text=";\n".join(
                    str(s.compile(dialect=dialect) if isinstance(s, ClauseElement) else s)
                    for s in statements
                ),
            )
            if len(self._summaries) < 64:
                self._summaries[statements] = summary
        return summary

    async def _alone(self, write: _Write) -> None:
        """One write in its own transaction, in its caller's trace."""

        def run(connection: Connection) -> None:
            for statement, params in zip(write.statements, write.params, strict=True):
                connection.execute(statement, params)

        spans = self._start_spans([write], [(write.statements, [write])])
        try:
            await self._transaction(run)
        except Exception as exc:
            _end_spans(spans, exc)
            _settle(write, exc)
        except BaseException as exc:
            _end_spans(spans, exc)
            raise
        else:
            _end_spans(spans, None)
            self._committed(1)
            _settle(write, None)

    async def _transaction(self, run: Callable[[Connection], None]) -> None:
        """Run and commit one transaction: on an SQLite file in one hop to its writer thread."""
        if self.writer is not None:
            await self.writer.transaction(run)
            return
        async with self._engine.begin() as connection:
            await connection.run_sync(run)

    def _committed(self, writes: int) -> None:
        if self._sizes is not None:
            self._sizes.observe(writes)


@dataclass(frozen=True, slots=True)
class _Summary:
    operations: tuple[str, ...]  # each statement's
    text: str


def _end_spans(spans: list[trace.Span], error: BaseException | None) -> None:
    ended = time_ns()
    try:
        for span in spans:
            if error is None:
                span.end(ended)
            else:
                end_with_error(span, error, ended)
    except Exception as exc:  # observability never fails a write
        log.error("write_not_observed", error_type=type(exc).__name__)


def _by_kind(batch: list[_Write]) -> list[tuple[Statements, list[_Write]]]:
    """The writes grouped by their statements, kinds in order of first arrival."""
    kinds: dict[int, tuple[Statements, list[_Write]]] = {}
    for write in batch:
        kind = kinds.get(id(write.statements))
        if kind is None:
            kinds[id(write.statements)] = (write.statements, [write])
        else:
            kind[1].append(write)
    return list(kinds.values())


def _abandon(batch: list[_Write], *_: Any) -> None:
    """Writes whose transaction was cancelled and settled none of them."""
    for write in batch:
        _settle(write, asyncio.CancelledError())


def _settle(write: _Write, error: BaseException | None) -> None:
    if error is None and write.committed is not None:
        try:
            write.committed()
        except Exception as exc:  # observability never fails a committed write
            log.error("write_not_observed", error_type=type(exc).__name__)
    if write.future.done():
        # Its caller went away (a client that disconnected): nobody is left to tell.
        if isinstance(error, Exception):
            log.error("write_failed", error_type=type(error).__name__, caller_gone=True)
        return
    if error is None:
        write.future.set_result(None)
    else:
        write.future.set_exception(error)
