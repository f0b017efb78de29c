"""Health of apps whose dependencies fail: database down, schema behind, Redis, AI service."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chatlens import state
from chatlens.app import create_app
from chatlens.db import migrate
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.db.session import Database
from chatlens.health.deps import HealthState
from chatlens.inference.base import BackendHealth
from chatlens.inference.deps import Inference
from chatlens.settings import Settings
from tests.helpers import make_settings, require

pytestmark = pytest.mark.asyncio

REDIS_URL = "redis://127.0.0.1:6379/0"
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"
UNREACHABLE_DB_URL = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
# Any of these in a response would leak where (or as whom) the service connects.
LEAKS = ("nobody", "127.0.0.1", ":1/", "postgresql", "asyncpg", "redis://", "none")


@asynccontextmanager
async def running(url: str, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app of its own, lifespan running, and a client for it."""
    app = create_app(make_settings(url, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield app, client


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def _assert_no_leak(response: httpx.Response) -> None:
    text = response.text
    assert not [leak for leak in LEAKS if leak in text], text


class FailingBackend:
    """An inference backend whose health check raises or reports itself down."""

    name = "failing"
    default_model = "none"

    def __init__(self, *, raises: bool) -> None:
        self.raises = raises

    async def health(self) -> BackendHealth:
        if self.raises:
            raise RuntimeError("cannot reach http://user:secret@model-host:8080/v1")
        return BackendHealth(
            ok=False, latency_ms=3.5, error="upstream http://model-host:8080/v1 at 10.0.0.5:8080"
        )


async def test_database_down_ready_503_live_200_health_unhealthy_without_leaks(
    settings: Settings,
) -> None:
    async with running(settings.database_url) as (app, client):
        await state.of(app).get(Database).engine.dispose()
        # Connection refused at once: no dependence on a network timeout.
        unreachable = create_engine(make_settings(UNREACHABLE_DB_URL))
        database = Database(engine=unreachable, sessionmaker=create_sessionmaker(unreachable))
        state.install(app, state.of(app).replace(database))
        try:
            live = await client.get("/health/live")
            assert live.status_code == 200

            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json() == {"status": "not_ready", "reason": "database_unavailable"}

            db = await client.get("/health/db")
            assert db.status_code == 503
            assert db.json()["status"] == "unhealthy"
            assert set(db.json()) == {"status", "latency_ms"}

            health = await client.get("/health")
            assert health.status_code == 503
            body = health.json()
            assert body["status"] == "unhealthy"
            database = body["services"]["database"]
            assert database["status"] == "unhealthy"
            assert database["error"] == "ConnectionRefusedError: connection refused"
            assert body["services"]["ai_service"]["status"] == "healthy"

            for response in (ready, db, health):
                _assert_no_leak(response)
        finally:
            await state.of(app).get(Database).engine.dispose()


async def test_schema_behind_is_not_ready_but_alive(fresh_database_url: Any) -> None:
    settings = make_settings(await fresh_database_url("health_schema"))
    await migrate.upgrade(settings)
    async with running(settings.database_url) as (_, client):
        assert (await client.get("/health/ready")).status_code == 200
        # As during a rolling deploy: the schema moves while the app serves.
        await migrate.downgrade(settings, "base")
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not_ready", "reason": "schema_not_at_head"}
        assert (await client.get("/health/live")).status_code == 200
        # The database itself still answers.
        assert (await client.get("/health/db")).status_code == 200


async def test_real_redis_is_reported_healthy(settings: Settings) -> None:
    require(_redis_reachable(), "Redis at 127.0.0.1:6379")
    async with running(settings.database_url, redis_url=REDIS_URL) as (_, client):
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["services"]["redis"]["status"] == "healthy"
    assert "error" not in body["services"]["redis"]
    assert body["services"]["redis"]["latency_ms"] >= 0


async def test_redis_down_is_degraded_not_unhealthy(settings: Settings) -> None:
    async with running(settings.database_url, redis_url=CLOSED_REDIS_URL) as (_, client):
        response = await client.get("/health")
        ready = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    redis = body["services"]["redis"]
    assert redis["status"] == "unhealthy"
    assert redis["error"] == "ConnectionError: connection refused"
    assert body["services"]["database"]["status"] == "healthy"
    _assert_no_leak(response)
    # Redis is optional: the instance still takes traffic.
    assert ready.status_code == 200


@pytest.mark.parametrize("raises", [True, False], ids=["health-raises", "reports-down"])
async def test_ai_service_down_is_unhealthy_with_a_safe_error(
    settings: Settings, raises: bool
) -> None:
    async with running(settings.database_url) as (app, client):
        serving = state.of(app).get(Inference)
        failing = Inference(
            backend=FailingBackend(raises=raises), active_model=serving.active_model
        )
        state.install(app, state.of(app).replace(failing))
        response = await client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    ai = body["services"]["ai_service"]
    assert ai["status"] == "unhealthy"
    if raises:
        assert ai["error"] == "RuntimeError: check failed"
    else:
        assert ai["latency_ms"] == 3.5
        assert ai["error"].startswith("upstream ")
    assert body["services"]["database"]["status"] == "healthy"
    for secret in ("model-host", "secret", "10.0.0.5", "8080", "http://"):
        assert secret not in response.text


async def test_uptime_counts_from_the_apps_start_when_recorded(settings: Settings) -> None:
    async with running(settings.database_url) as (app, client):
        fallback = (await client.get("/health")).json()["uptime_seconds"]
        started = replace(state.of(app).get(HealthState), started_at=time.monotonic() - 123.0)
        state.install(app, state.of(app).replace(started))
        recorded = (await client.get("/health")).json()["uptime_seconds"]
    assert fallback >= 0
    assert 123.0 <= recorded < 183.0
