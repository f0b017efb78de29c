"""A whole SQLite transaction in one trip to the driver's thread.

aiosqlite runs every call on the connection's own thread, and SQLAlchemy's async adapter
makes three trips per statement (cursor, execute, close) and one for the commit: eight for
a new conversation's two rows, ten for an answer's three. Each trip is a thread switch and
an event-loop wake-up, dear on a busy core (benchmarks/README.md). `SqliteThread.transaction`
builds the transaction with a synchronous SQLAlchemy connection over the same sqlite3
connection and runs all of it on that thread, in one trip: the same statements, types, SQL
spans and errors, on the one connection SQLite's writes share.

It reaches two private names of aiosqlite's `Connection`, `_execute` (run a function on its
thread) and `_conn` (its sqlite3 connection), both in every release since 0.17;
`SqliteThread.usable` tells whether they are there, and the callers go the usual way when
they are not.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Callable
from typing import Any

import aiosqlite
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

Work = Callable[[Connection], None]


class SqliteThread:
    """Runs transactions of an aiosqlite engine on its connection's thread."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._url = engine.url.set(drivername="sqlite")
        self._hide_parameters = engine.sync_engine.hide_parameters
        # A synchronous engine per aiosqlite connection, over its sqlite3 connection: the
        # pool may replace a connection, and the engine goes with it.
        self._sync: weakref.WeakKeyDictionary[Any, Engine] = weakref.WeakKeyDictionary()

    @staticmethod
    def usable(engine: AsyncEngine) -> bool:
        """An aiosqlite engine on a file. Not an in-memory database: its one connection is
        shared by every session, and the synchronous engine's first connect rolls back."""
        if engine.dialect.name != "sqlite" or engine.dialect.driver != "aiosqlite":
            return False
        database = engine.url.database
        if not database or database == ":memory:" or engine.url.query.get("mode") == "memory":
            return False
        return hasattr(aiosqlite.Connection, "_execute") and hasattr(aiosqlite.Connection, "_conn")

    async def transaction(self, work: Work) -> None:
        """Run `work` in a transaction and commit it (or roll it back and raise)."""
        async with self._engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            if driver is None:
                raise RuntimeError("the pool lent a connection without a driver connection")
            sync = self._sync.get(driver)
            if sync is None:
                sync = self._sync[driver] = self._sync_engine(driver)
            # The caller's context goes along: SQL spans join its trace.
            context = contextvars.copy_context()
            await driver._execute(context.run, _transaction, sync, work)

    def _sync_engine(self, driver: Any) -> Engine:
        # The pool asks for its connection on the driver's thread, at the first transaction
        # (sqlite3 connections belong to the thread that made them). A weak reference: the
        # engine must not keep its aiosqlite connection, the key it is kept under, alive.
        owner = weakref.ref(driver)

        def connection() -> Any:
            driver = owner()
            if driver is None:
                raise RuntimeError("the aiosqlite connection is gone")
            return driver._conn

        # The connection stays aiosqlite's to close: this engine is never disposed, and it
        # goes when its aiosqlite connection does.
        return create_engine(
            self._url,
            creator=connection,
            poolclass=StaticPool,
            hide_parameters=self._hide_parameters,
        )


def _transaction(engine: Engine, work: Work) -> None:
    with engine.begin() as connection:
        work(connection)
