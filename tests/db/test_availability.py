"""A database that goes away: 503 database_unavailable with Retry-After, one warning per
outage, a metric, and service again as soon as it is back; on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import LogCapture

from chatlens.db import availability, migrate
from chatlens.observability import middleware
from tests.conftest import PG_URL_ENV
from tests.helpers import Server, api_on, free_port, make_settings, parse_sse, require
from tests.tcp_proxy import TcpProxy

ORDER = {"message": "Where is my order?"}
KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The outage's lines and the unhandled-error lines, whatever logging configuration an
    earlier test left behind."""
    captured = LogCapture()
    logger = structlog.wrap_logger(None, processors=[captured])
    monkeypatch.setattr(availability, "log", logger)
    monkeypatch.setattr(middleware, "log", logger)
    return captured.entries


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def assert_unavailable(response: httpx.Response, *, openai: bool = False) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    error = response.json()["error"]
    if openai:
        assert error["code"] == "database_unavailable"
    else:
        assert error["type"] == "database_unavailable"
        assert error["request_id"] == response.headers["x-request-id"]


async def wait_for_event(logged: list[dict[str, Any]], event: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15  # the probe runs every second
    while time.monotonic() < deadline:
        found = [line for line in logged if line["event"] == event]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event} within 15 s")


def warnings_and_errors(logged: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["log_level"], e["event"]) for e in logged if e["log_level"] not in ("debug", "info")]


@asynccontextmanager
async def postgres_behind_proxy() -> AsyncIterator[tuple[str, TcpProxy]]:
    """A database of its own on the shared server, reached through a proxy the test cuts."""
    import asyncpg  # type: ignore[import-untyped]

    base = os.environ.get(PG_URL_ENV)
    require(bool(base), f"PostgreSQL ({PG_URL_ENV})")
    url = make_url(str(base))
    name = f"chatlens_outage_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database="postgres",
    )
    await admin.execute(f'CREATE DATABASE "{name}"')
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        proxied = url.set(host="127.0.0.1", port=proxy.port, database=name)
        database_url = proxied.render_as_string(hide_password=False)
        await migrate.upgrade(make_settings(database_url))
        yield database_url, proxy
    finally:
        proxy.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_postgresql_outage_is_503_warned_once_counted_and_recovers(
    logged: list[dict[str, Any]],
) -> None:
    async with postgres_behind_proxy() as (url, proxy), api_on(url) as (client, headers):
        assert (await client.post("/chat", json=ORDER, headers=headers)).status_code == 200
        model = (await client.get("/v1/models", headers=headers)).json()["data"][0]["id"]

        proxy.cut()
        assert_unavailable(await client.post("/chat", json=ORDER, headers=headers))
        assert_unavailable(await client.get("/api/conversations", headers=headers))
        v1 = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        assert_unavailable(
            await client.post("/v1/chat/completions", json=v1, headers=headers), openai=True
        )
        text = (await client.get("/metrics")).text
        assert metric(text, "db_unavailable_requests_total") == 3
        assert metric(text, "db_up") == 0
        # One warning for the outage, no error line (nor traceback) per request.
        assert warnings_and_errors(logged) == [("warning", "database_unavailable")]

        proxy.restore()
        # Back by itself: the next request is served.
        assert (await client.post("/chat", json=ORDER, headers=headers)).status_code == 200
        recovered = await wait_for_event(logged, "database_recovered")
        assert recovered["refused"] == 3
        assert recovered["log_level"] == "info"
        assert metric((await client.get("/metrics")).text, "db_up") == 1


async def test_postgresql_outage_during_a_stream_ends_it_with_an_error_event(
    tmp_path: Path, env_without_chatlens: dict[str, str]
) -> None:
    async with postgres_behind_proxy() as (url, proxy):
        env = {
            **env_without_chatlens,
            "DATABASE_URL": url,
            "CHATLENS_BUILTIN_STREAM_DELAY_MS": "100",
        }
        server = Server(tmp_path, env)
        try:
            key = KEY.findall(server.output)[0]
            body = {**ORDER, "stream": True}
            headers = {"Authorization": f"Bearer {key}"}
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=30) as client,
                client.stream("POST", "/chat", json=body, headers=headers) as response,
            ):
                assert response.status_code == 200
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("event: delta"):
                        break
                # Mid-answer: the question is stored; the answer is stored when it ends.
                proxy.cut()
                text = "\n".join([line async for line in lines])
        finally:
            server.stop()
        events = parse_sse(text)
        assert events[-1][0] == "error", events
        assert events[-1][1]["type"] == "database_unavailable"
        logged = [orjson.loads(line) for line in server.lines() if line.startswith("{")]
        assert [line for line in logged if line["level"] == "ERROR"] == []
        # The stream told the outage tracker: one warning for the outage, as for requests.
        warned = [line["event"] for line in logged if line["level"] == "WARNING"]
        assert warned.count("database_unavailable") == 1, warned
        assert "stream_failed" not in warned


async def test_a_locked_sqlite_file_is_503_and_service_resumes_when_released(
    tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    path = tmp_path / "chatlens.db"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate.upgrade(make_settings(url))
    async with api_on(url) as (client, headers):
        assert (await client.post("/chat", json=ORDER, headers=headers)).status_code == 200
        # Another process holds the write lock (a stuck job, a copy in progress): writes
        # wait SQLite's busy timeout (5 s), then fail.
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            assert_unavailable(await client.post("/chat", json=ORDER, headers=headers))
            # Readers go on beside the lock (WAL).
            assert (await client.get("/api/conversations", headers=headers)).status_code == 200
        finally:
            holder.rollback()
            holder.close()
        assert warnings_and_errors(logged) == [("warning", "database_unavailable")]
        assert (await client.post("/chat", json=ORDER, headers=headers)).status_code == 200
        await wait_for_event(logged, "database_recovered")
        text = (await client.get("/metrics")).text
        assert metric(text, "db_unavailable_requests_total") == 1
        assert metric(text, "db_up") == 1


@pytest.mark.parametrize(
    ("statement", "parameters"),
    [
        ("SELECT * FROM no_such_table", {}),
        ("SELEC 1", {}),
        ("SELECT CAST(:n AS BIGINT)", {"n": 2**70}),
    ],
)
async def test_a_wrong_statement_is_a_bug_not_an_outage(
    fresh_database_url: Any, statement: str, parameters: dict[str, Any]
) -> None:
    """SQLite reports a missing table as an OperationalError, asyncpg a bad parameter as an
    error of its own: neither may be answered 503 and hidden from the error reports."""
    engine = create_async_engine(await fresh_database_url("wrong"))
    try:
        with pytest.raises(Exception) as raised:  # noqa: PT011 (each driver its own type)
            async with engine.connect() as connection:
                await connection.execute(text(statement), parameters)
    finally:
        await engine.dispose()
    assert not availability.is_database_unavailable(raised.value), repr(raised.value)


async def test_a_refused_connection_is_an_outage(fresh_database_url: Any) -> None:
    url = make_url(await fresh_database_url("refused"))
    if url.get_backend_name() == "sqlite":
        url = url.set(database="/nonexistent-dir/chatlens.db")  # the file cannot be opened
    else:
        url = url.set(host="127.0.0.1", port=free_port())  # nothing listens there
    engine = create_async_engine(url)
    try:
        with pytest.raises(Exception) as raised:  # noqa: PT011 (each driver its own type)
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert availability.is_database_unavailable(raised.value), repr(raised.value)


async def test_a_statement_cut_by_its_timeout_is_not_an_outage() -> None:
    """SQLSTATE 57014 is of the class of a server going away, but says that one statement
    ran too long: a 500 with its traceback, not a 503 and a probe."""
    base = os.environ.get(PG_URL_ENV)
    require(bool(base), f"PostgreSQL ({PG_URL_ENV})")
    engine = create_async_engine(str(base))
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SET statement_timeout = 50"))
            with pytest.raises(Exception) as raised:  # noqa: PT011 (the driver's own type)
                await connection.execute(text("SELECT pg_sleep(5)"))
    finally:
        await engine.dispose()
    assert "57014" in repr(raised.value) or "cancel" in str(raised.value).lower()
    assert not availability.is_database_unavailable(raised.value), repr(raised.value)


async def test_a_read_only_sqlite_file_is_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "chatlens.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x INTEGER)").connection.close()
    engine = create_async_engine(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true")
    try:
        with pytest.raises(Exception) as raised:  # noqa: PT011 (the driver's own type)
            async with engine.connect() as connection:
                await connection.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
    assert "readonly" in str(raised.value)
    assert availability.is_database_unavailable(raised.value), repr(raised.value)
