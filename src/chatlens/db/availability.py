"""A database that cannot be reached: 503 with Retry-After, one warning per outage, a probe
that reports the recovery, and metrics.

Requests are not short-circuited during an outage: each one still tries the database, so
service resumes with the first request after the database is back. The probe only tells
when that happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import time
import traceback
from collections.abc import Callable

import asyncpg  # type: ignore[import-untyped]
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatlens.errors import ChatlensError, respond
from chatlens.observability.metrics import Metrics
from chatlens.state import state_of

log = structlog.get_logger(__name__)

RETRY_AFTER_SECONDS = 5
_DB_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3")


class DatabaseUnavailable(ChatlensError):
    status_code = 503
    error_type = "database_unavailable"

    def __init__(self, message: str = "the database is unavailable; try again shortly") -> None:
        super().__init__(message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _raised_by_database_driver(exc: BaseException) -> bool:
    return any(
        str(frame.f_globals.get("__name__", "")).startswith(_DB_MODULES)
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


# What says "cannot be reached or used now" rather than "this statement is wrong".
# PostgreSQL, by SQLSTATE: class 08 connection exception, class 53 insufficient resources
# (too many connections, disk full), and of class 57 the server going or gone (57P01 admin
# shutdown … 57P05), not 57014, a statement cancelled (a timeout: that statement's fault).
_POSTGRES_UNAVAILABLE = ("08", "53", "57P")
# SQLite tells only in words: a file another connection holds, or one it cannot use.
_SQLITE_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "unable to open database file",
    "disk i/o error",
    "database or disk is full",
    "readonly database",
)


def _driver_says_unavailable(error: BaseException) -> bool:
    """Whether the driver's own error is about the database's reach, not a statement."""
    own = error.__cause__ if error.__cause__ is not None else error  # asyncpg's, unwrapped
    sqlstate = getattr(error, "sqlstate", None) or getattr(own, "sqlstate", None)
    if sqlstate:
        return str(sqlstate).startswith(_POSTGRES_UNAVAILABLE)
    if isinstance(own, asyncpg.DataError):  # a parameter the driver refused: a bug of ours
        return False
    if isinstance(own, OSError | asyncpg.InterfaceError):  # refused, reset, closed
        return True
    message = str(error).lower()
    return any(words in message for words in _SQLITE_UNAVAILABLE)


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached or used now, rather than that a
    statement was wrong: a lost or refused connection, a locked SQLite file, a full pool.
    A missing table, a syntax error or a bad parameter is a bug: not an outage."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return exc.orig is not None and _driver_says_unavailable(exc.orig)
        return False
    if isinstance(exc, sa_exc.TimeoutError):  # no connection free in the pool in time
        return True
    # Errors of connecting are raised as the driver raised them, not wrapped.
    if isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError):
        return _raised_by_database_driver(exc) and _driver_says_unavailable(exc)
    return False


def _reason(exc: BaseException) -> str:
    # The driver's message, not SQLAlchemy's, which appends the statement.
    original = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    return str(original)[:200]


class DatabaseOutage:
    """This process's view of the database: up, or down since the first refused request."""

    def __init__(
        self,
        metrics: Metrics | None,
        *,
        probe_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.probe_interval_s = probe_interval_s
        self.clock = clock
        self.engine: AsyncEngine | None = None
        self.down_since: float | None = None
        self.refused_count = 0
        self._probe: asyncio.Task[None] | None = None

    def open(self, engine: AsyncEngine) -> None:
        self.engine = engine
        if self.metrics is not None:
            self.metrics.db_up.set(1)

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        self.engine = None

    def failed(self, exc: BaseException, *, refused: bool = True) -> None:
        """The database failed a request (`refused`: answered 503) or a stream."""
        if refused:
            self.refused_count += 1
            if self.metrics is not None:
                self.metrics.db_unavailable_requests.inc()
        if self.down_since is not None:
            return  # logged once, when the outage began
        self.down_since = self.clock()
        log.warning("database_unavailable", error_type=type(exc).__name__, reason=_reason(exc))
        if self.metrics is not None:
            self.metrics.db_up.set(0)
        if self.engine is not None and (self._probe is None or self._probe.done()):
            # In a context of its own: its lines are not the refused request's.
            self._probe = asyncio.get_running_loop().create_task(
                self._wait_for_recovery(), context=contextvars.Context()
            )

    async def _wait_for_recovery(self) -> None:
        while self.engine is not None:
            await asyncio.sleep(self.probe_interval_s)
            if await self._reachable(self.engine):
                self._recovered()
                return

    async def _reachable(self, engine: AsyncEngine) -> bool:
        try:
            async with engine.connect() as connection:
                if engine.dialect.name == "sqlite":
                    # SQLite's readers go on while a writer holds the file: ask for the lock.
                    await connection.exec_driver_sql("BEGIN IMMEDIATE")
                    await connection.rollback()
                else:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:
            # Whatever the reason, it is not back yet; the loop must outlive odd errors.
            log.debug("database_probe_failed", error_type=type(exc).__name__)
            return False
        return True

    def _recovered(self) -> None:
        since = self.down_since
        self.down_since = None
        log.info(
            "database_recovered",
            down_seconds=round(self.clock() - since, 3) if since is not None else None,
            refused=self.refused_count,
        )
        self.refused_count = 0
        if self.metrics is not None:
            self.metrics.db_up.set(1)


async def _database_error(request: Request, exc: Exception) -> Response:
    if not is_database_unavailable(exc):
        raise exc  # a bug, not an outage: the observability layer answers 500 and logs it
    state_of(request).get(DatabaseOutage).failed(exc)
    return respond(request, DatabaseUnavailable())


def install_database_error_handler(app: FastAPI) -> None:
    """Answer 503 `database_unavailable` for the errors of an unreachable database."""
    # Not OSError as a whole: a client that went away mid-stream makes the response's send
    # raise one, and a handler for it would turn that into a second error. A connection the
    # driver could not open raises one of these two, raw.
    for kind in (
        sa_exc.DBAPIError,
        sa_exc.TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        ConnectionRefusedError,
        socket.gaierror,
    ):
        app.add_exception_handler(kind, _database_error)
