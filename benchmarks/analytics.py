"""Analytics at scale: 1,000,000 conversation_metrics rows on PostgreSQL and SQLite.

Loads the rows with a fast bulk path (COPY on PostgreSQL, batched executemany on SQLite: the
benchmark's own shortcut, not the service's write path), then times the summary, the
intents table and a daily timeseries of a 30-day range, and streams a CSV and an XLSX
export of every row while sampling this process's resident memory.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from chatlens.analytics import export, summary, timeseries
from chatlens.db import migrate
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.models import ConversationMetrics
from chatlens.settings import load_settings

PG_URL = os.environ.get(
    "CHATLENS_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
DAYS = 30
END = datetime(2026, 1, 31, tzinfo=UTC)
START = END - timedelta(days=DAYS)
INTENTS = ["order_status", "refund", "delivery_time", "cancel_order", "payment_failed",
           "password_reset", "greeting", "unknown"]  # fmt: skip
PLATFORMS = ["web", "telegram", "whatsapp", "email"]
PROJECTS = ["default", "shop", "mobile-app"]


@dataclass
class Timing:
    name: str
    seconds: float


@dataclass
class ExportRun:
    fmt: str
    seconds: float
    bytes: int
    rss_growth_mb: float


@dataclass
class BackendResult:
    backend: str
    rows: int
    load_s: float
    queries: list[Timing] = field(default_factory=list)
    exports: list[ExportRun] = field(default_factory=list)


def _rows(count: int, seed: int = 1) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    span = (END - START).total_seconds()
    user = uuid.uuid4()
    result = []
    for _ in range(count):
        prompt = rng.randrange(10, 400)
        completion = rng.randrange(10, 300)
        result.append(
            (
                START + timedelta(seconds=rng.random() * span),
                uuid.uuid4(),
                uuid.uuid4(),
                user,
                rng.choice(PROJECTS),
                rng.choice(PLATFORMS),
                f"customer-{rng.randrange(50_000)}",
                "builtin-kb",
                rng.choice(INTENTS),
                rng.random(),
                rng.lognormvariate(5.5, 0.6),
                rng.lognormvariate(4.0, 0.5),
                prompt,
                completion,
                prompt + completion,
                Decimal(prompt + completion) / Decimal(1_000_000),
                None,
                False,
                rng.random() < 0.1,
                "complete",
                uuid.uuid4(),
            )
        )
    return result


COLUMNS = [c.name for c in ConversationMetrics.__table__.columns]


async def _load_postgres(url: str, rows: list[tuple[Any, ...]]) -> None:
    import asyncpg  # type: ignore[import-untyped]

    plain = make_url(url)
    connection = await asyncpg.connect(
        host=plain.host, port=plain.port or 5432, user=plain.username, database=plain.database
    )
    try:
        await connection.copy_records_to_table(
            "conversation_metrics", records=rows, columns=COLUMNS
        )
        await connection.execute("ANALYZE conversation_metrics")
    finally:
        await connection.close()


def _load_sqlite(url: str, rows: list[tuple[Any, ...]]) -> None:
    engine = create_sync_engine(url.replace("+aiosqlite", ""))
    try:
        with engine.begin() as connection:
            for start in range(0, len(rows), 20_000):
                batch = [
                    dict(zip(COLUMNS, row, strict=True)) for row in rows[start : start + 20_000]
                ]
                connection.execute(insert(ConversationMetrics), batch)
            connection.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()


@asynccontextmanager
async def _database(backend: str) -> AsyncIterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="chatlens-analytics-") as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        return
    import asyncpg

    base = make_url(PG_URL)
    name = f"chatlens_bench_{os.getpid()}"
    admin = await asyncpg.connect(
        host=base.host, port=base.port or 5432, user=base.username, database="postgres"
    )
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _timed(name: str, action: Callable[[], Awaitable[Any]]) -> Timing:
    started = time.perf_counter()
    await action()
    return Timing(name, time.perf_counter() - started)


async def bench_backend(backend: str, rows: list[tuple[Any, ...]]) -> BackendResult:
    async with _database(backend) as url:
        settings = load_settings(database_url=url, environment="test", bootstrap_admin=False)
        await migrate.upgrade(settings)
        started = time.perf_counter()
        if backend == "postgresql":
            await _load_postgres(url, rows)
        else:
            await asyncio.to_thread(_load_sqlite, url, rows)
        result = BackendResult(backend, len(rows), time.perf_counter() - started)
        engine = create_engine(settings)
        try:
            maker = create_sessionmaker(engine)
            filters = summary.Filters(start=START, end=END)
            async with maker() as session:
                result.queries.append(
                    await _timed("summary", lambda: summary.summary(session, filters))
                )
                result.queries.append(
                    await _timed("intents", lambda: summary.intents(session, filters))
                )
                result.queries.append(
                    await _timed(
                        "timeseries (turns per day)",
                        lambda: timeseries.timeseries(
                            session, filters, metric="turns", interval="day"
                        ),
                    )
                )
            for fmt in ("csv", "xlsx"):
                result.exports.append(await _export(maker, filters, fmt))
        finally:
            await engine.dispose()
    return result


async def _export(maker: Any, filters: summary.Filters, fmt: str) -> ExportRun:
    baseline = _rss_mb()
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    size = 0
    started = time.perf_counter()
    try:
        async for chunk in export.stream(maker, "conversation_metrics", filters, fmt):  # type: ignore[arg-type]
            size += len(chunk)
    finally:
        stop.set()
        sampler.join()
    return ExportRun(fmt, time.perf_counter() - started, size, peak - baseline)


def bench_analytics(
    rows: int, backends: tuple[str, ...] = ("postgresql", "sqlite")
) -> list[BackendResult]:
    data = _rows(rows)
    return [asyncio.run(bench_backend(backend, data)) for backend in backends]
