"""A whole SQLite transaction in one hop to a writer thread.

aiosqlite runs every call on its connection's own thread, and SQLAlchemy's async adapter
makes three trips there per statement (cursor, execute, close) and one for the commit; each
trip is a thread switch and an event-loop wake-up. `SqliteWriter.transaction` instead hands
the whole transaction, as one function, to a thread of its own (a single-thread executor,
through `loop.run_in_executor`), which runs it with a synchronous SQLAlchemy engine: the
same statements, types and errors, in one hop there and back.

The writer's connection is a second connection to the file, set up as the async engine's
are (`chatlens.db.engine.create_sqlite_writer`: WAL, synchronous=NORMAL, foreign keys, the
busy timeout). SQLite lets one connection write at a time; two of one process that both
write meet in SQLite's busy handler, which sleeps. So while the thread runs a transaction,
the writer holds a connection of the async engine (on a file its pool has one): the async
engine's own writes (and reads) queue in its pool meanwhile, as they queued behind the
group commit's transaction when it ran on that connection, and the two connections never
wait on each other's lock. A transaction whose caller is cancelled goes on to its end (a
thread cannot be stopped), and the async connection stays held until it has ended.

An in-memory database is left to the async engine (`SqliteWriter.usable`): a second
connection to one would be another, empty database.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from chatlens.db.engine import create_sqlite_writer

Work = Callable[[Connection], None]

# The writer thread's name, as threading.enumerate() shows it (with a "_0" after it).
THREAD_NAME = "chatlens-sqlite-writer"


@dataclass(slots=True, frozen=True)
class _Thread:
    executor: Executor
    engine: Engine  # its one connection lives on the executor's thread


class SqliteWriter:
    """Runs transactions on an SQLite file in a thread of their own, one at a time."""

    def __init__(self, engine: AsyncEngine, *, executor: Executor | None = None) -> None:
        """`executor`, when given, must run one thing at a time on one thread (a
        `ThreadPoolExecutor(max_workers=1)`); it stays the caller's to shut down. Without it
        the writer starts its own at the first transaction and shuts it down in `aclose`."""
        self._engine = engine
        self._given = executor
        self._thread: _Thread | None = None

    @staticmethod
    def usable(engine: AsyncEngine) -> bool:
        """An SQLite engine on a file, not an in-memory database, whose pool has the one
        connection the writer holds while it writes (as `create_engine` makes it)."""
        database = engine.url.database
        size = getattr(engine.pool, "size", None)
        return (
            engine.dialect.name == "sqlite"
            and bool(database)
            and ":memory:" not in (database or "")
            and engine.url.query.get("mode") != "memory"
            and callable(size)
            and size() == 1
        )

    @property
    def engine(self) -> Engine:
        """The synchronous engine the thread writes with (a new one after `aclose`)."""
        return self._started().engine

    async def transaction(self, work: Work) -> None:
        """Run `work` in a transaction and commit it (or roll it back and raise)."""
        loop = asyncio.get_running_loop()
        # Held, not used: the async engine writes nothing on it while the thread writes.
        async with self._engine.connect():
            # Here, with no await before the hand-over: an `aclose` under way has either
            # let go of this thread already or closes it after this transaction.
            thread = self._started()
            # The caller's context goes along (its log fields and trace).
            context = contextvars.copy_context()
            running = loop.run_in_executor(
                thread.executor, context.run, _transaction, thread.engine, work
            )
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                # The thread finishes what it was given: keep the connection until then, a
                # second cancellation (a shutdown cancelling every task) included.
                while not running.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait((running,))
                if not running.cancelled():
                    running.exception()  # its outcome was the caller's to hear
                raise

    async def aclose(self) -> None:
        """Close the thread's connection, on the thread, after the transactions it was given,
        and stop the thread (when it is the writer's own). A later transaction starts anew."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(thread.executor, thread.engine.dispose)
        if thread.executor is not self._given:
            thread.executor.shutdown(wait=True)  # idle by now: the thread just ends

    def _started(self) -> _Thread:
        thread = self._thread
        if thread is None:
            executor = self._given or ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=THREAD_NAME
            )
            # No connection yet: the engine makes it on the thread, at its first transaction.
            thread = self._thread = _Thread(executor, create_sqlite_writer(self._engine))
        return thread


def _transaction(engine: Engine, work: Work) -> None:
    with engine.begin() as connection:
        work(connection)
