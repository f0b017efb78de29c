"""Health checks of the database, Redis and the inference backend: timed, bounded, never raising.

Errors are reported as an exception class name and a generic phrase, never as the
exception's text: a driver's message can carry the host, port, user or the whole URL.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatlens import __version__
from chatlens.db import migrate
from chatlens.inference.base import InferenceBackend

log = structlog.get_logger(__name__)

CHECK_TIMEOUT_S = 1.0
# Fallback for uptime when no start was recorded (the lifespan records one: HealthState).
PROCESS_STARTED_AT = time.monotonic()

Status = Literal["healthy", "unhealthy"]
OverallStatus = Literal["healthy", "degraded", "unhealthy"]
NotReadyReason = Literal["database_unavailable", "schema_not_at_head", "shutting_down"]

_MAX_ERROR_CHARS = 120
# A backend's own error text is not under our control: URLs and host:port pairs go.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
_HOST_PORT = re.compile(r"[\w.-]+:\d{1,5}\b")


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    status: Status
    latency_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "healthy"


@dataclass(frozen=True, slots=True)
class OverallHealth:
    status: OverallStatus
    timestamp: datetime
    version: str
    uptime_seconds: float
    services: dict[str, ServiceHealth]

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unhealthy" else 200


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (SQLAlchemy's .orig, then __cause__/__context__)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return chain


def _phrase(exc: BaseException) -> str:
    chain = _causes(exc)
    if any(isinstance(e, TimeoutError) for e in chain):
        return "timed out"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "host not found"
    # By name, so the health module needs neither asyncpg nor redis's exception classes:
    # asyncpg's InvalidPasswordError / InvalidAuthorizationSpecificationError, redis's
    # AuthenticationError.
    names = [type(e).__name__ for e in chain]
    if any(w in name for name in names for w in ("Password", "Authoriz", "Authentic")):
        return "authentication failed"
    if any(isinstance(e, OSError) or "Connection" in type(e).__name__ for e in chain):
        return "connection failed"
    return "check failed"


def describe(exc: BaseException) -> str:
    """A short description safe to show anyone: class name and a generic phrase."""
    return f"{type(exc).__name__}: {_phrase(exc)}"


def redact(message: str) -> str:
    """Drop URLs and host:port pairs from text we did not write, and keep it short."""
    cleaned = _HOST_PORT.sub("<redacted>", _URL.sub("<redacted>", message))
    return cleaned[:_MAX_ERROR_CHARS]


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def _timed(
    service: str, probe: Callable[[], Awaitable[Any]], timeout_s: float
) -> ServiceHealth:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            await probe()
    except Exception as exc:  # a health check reports failures, it never raises them
        error = describe(exc)
        log.warning("health_check_failed", service=service, error=error)
        return ServiceHealth("unhealthy", _elapsed_ms(started), error)
    return ServiceHealth("healthy", _elapsed_ms(started))


async def check_database(engine: AsyncEngine, timeout_s: float = CHECK_TIMEOUT_S) -> ServiceHealth:
    """SELECT 1 on a pooled connection."""

    async def probe() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    return await _timed("database", probe, timeout_s)


async def check_redis(redis: Redis, timeout_s: float = CHECK_TIMEOUT_S) -> ServiceHealth:
    """PING."""

    async def probe() -> None:
        await redis.ping()

    return await _timed("redis", probe, timeout_s)


async def check_ai(backend: InferenceBackend, timeout_s: float = CHECK_TIMEOUT_S) -> ServiceHealth:
    """The inference backend's own health check."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            result = await backend.health()
    except Exception as exc:  # a health check reports failures, it never raises them
        error = describe(exc)
        log.warning("health_check_failed", service="ai_service", error=error)
        return ServiceHealth("unhealthy", _elapsed_ms(started), error)
    latency = round(result.latency_ms, 2)
    if result.ok:
        return ServiceHealth("healthy", latency)
    error = redact(result.error or "backend reported unhealthy")
    log.warning("health_check_failed", service="ai_service", error=error)
    return ServiceHealth("unhealthy", latency, error)


async def readiness(
    engine: AsyncEngine, timeout_s: float = CHECK_TIMEOUT_S
) -> NotReadyReason | None:
    """None when the database answers within the timeout and its schema is at head."""

    async def check() -> bool:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return await migrate.is_at_head(engine)

    try:
        async with asyncio.timeout(timeout_s):
            at_head = await check()
    except Exception as exc:  # not ready is an answer, not an error
        log.warning("not_ready", error=describe(exc))
        return "database_unavailable"
    return None if at_head else "schema_not_at_head"


def uptime_seconds(started_at: float | None = None) -> float:
    """Seconds since started_at (a time.monotonic() value), else since this module loaded."""
    start = PROCESS_STARTED_AT if started_at is None else started_at
    return round(time.monotonic() - start, 3)


async def overall(
    engine: AsyncEngine,
    backend: InferenceBackend,
    redis: Redis | None = None,
    *,
    started_at: float | None = None,
    timeout_s: float = CHECK_TIMEOUT_S,
) -> OverallHealth:
    """All checks at once; database and AI are critical (unhealthy), Redis optional (degraded)."""
    checks = [check_database(engine, timeout_s), check_ai(backend, timeout_s)]
    if redis is not None:
        checks.append(check_redis(redis, timeout_s))
    results = await asyncio.gather(*checks)
    services = {"database": results[0], "ai_service": results[1]}
    if redis is not None:
        services["redis"] = results[2]

    status: OverallStatus = "healthy"
    if not (services["database"].ok and services["ai_service"].ok):
        status = "unhealthy"
    elif not all(s.ok for s in services.values()):
        status = "degraded"
    return OverallHealth(
        status=status,
        timestamp=datetime.now(UTC),
        version=__version__,
        uptime_seconds=uptime_seconds(started_at),
        services=services,
    )
