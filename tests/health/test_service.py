"""The checks themselves: bounded by their timeout, never raising, errors safe to show."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from redis.asyncio import Redis

from chatlens.health import service
from chatlens.inference.base import BackendHealth

pytestmark = pytest.mark.asyncio


class SlowBackend:
    name = "slow"
    default_model = "none"

    async def health(self) -> BackendHealth:
        await asyncio.sleep(5)
        return BackendHealth(ok=True, latency_ms=5000)


async def test_a_hanging_check_is_cut_at_its_timeout() -> None:
    result = await service.check_ai(SlowBackend(), timeout_s=0.05)  # type: ignore[arg-type]
    assert result.status == "unhealthy"
    assert result.error == "TimeoutError: timed out"
    assert 50 <= result.latency_ms < 1000


async def test_redis_check_times_out_against_a_silent_server() -> None:
    # A listening socket that never answers: the connection opens, PING never returns.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        redis = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            result = await service.check_redis(redis, timeout_s=0.1)
        finally:
            await redis.aclose()
    assert result.status == "unhealthy"
    assert result.error == "TimeoutError: timed out"
    assert str(port) not in result.error


UP = service.ServiceHealth("healthy", 1.0)
DOWN = service.ServiceHealth("unhealthy", 1.0, "TimeoutError: timed out")


@pytest.mark.parametrize(
    ("database", "ai", "redis", "expected"),
    [
        (UP, UP, None, "healthy 200"),
        (UP, UP, UP, "healthy 200"),
        (UP, UP, DOWN, "degraded 200"),
        (DOWN, UP, UP, "unhealthy 503"),
        (UP, DOWN, None, "unhealthy 503"),
        (DOWN, DOWN, DOWN, "unhealthy 503"),
    ],
    ids=["no-redis", "all-up", "redis-down", "db-down", "ai-down", "all-down"],
)
async def test_overall_database_and_ai_are_critical_redis_optional(
    monkeypatch: pytest.MonkeyPatch,
    database: service.ServiceHealth,
    ai: service.ServiceHealth,
    redis: service.ServiceHealth | None,
    expected: str,
) -> None:
    def returning(result: service.ServiceHealth | None) -> Any:
        async def check(*_: object, **__: object) -> service.ServiceHealth | None:
            return result

        return check

    monkeypatch.setattr(service, "check_database", returning(database))
    monkeypatch.setattr(service, "check_ai", returning(ai))
    monkeypatch.setattr(service, "check_redis", returning(redis))
    client = None if redis is None else object()
    result = await service.overall(object(), object(), client)  # type: ignore[arg-type]
    assert f"{result.status} {result.http_status}" == expected
    assert ("redis" in result.services) is (redis is not None)
