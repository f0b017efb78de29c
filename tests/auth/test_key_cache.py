"""API keys are looked up once per CHATLENS_API_KEY_CACHE_TTL_SECONDS, and revocation holds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, update

from chatlens import state
from chatlens.app import create_app
from chatlens.auth import service as auth
from chatlens.db import migrate
from chatlens.db.base import utcnow
from chatlens.db.session import Database
from chatlens.models import ApiKey
from tests.helpers import ManualClock, make_settings

pytestmark = pytest.mark.asyncio

TTL_S = 30.0


@dataclass
class Running:
    app: FastAPI
    client: httpx.AsyncClient
    lookups: list[str]
    clock: ManualClock

    async def me(self, key: str) -> httpx.Response:
        return await self.client.get("/api/me", headers={"Authorization": f"Bearer {key}"})

    async def new_key(self, *, admin: bool = False) -> tuple[str, Any]:
        async with state.of(self.app).get(Database).sessionmaker() as session, session.begin():
            user = await auth.create_user(
                session, name=f"u{len(self.lookups)}{admin}", is_admin=admin
            )
            row, key = await auth.create_key(session, user=user)
        return key, row.id

    async def revoke_in_database(self, key_id: Any) -> None:
        """As `chatlens keys revoke` or another replica does: not through this process."""
        async with state.of(self.app).get(Database).sessionmaker() as session, session.begin():
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=utcnow())
            )


async def _running(url: str, ttl_s: float, **overrides: Any) -> AsyncIterator[Running]:
    settings = make_settings(url, api_key_cache_ttl_seconds=ttl_s, **overrides)
    await migrate.upgrade(settings)
    clock = ManualClock()
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        lookups: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT") and "api_keys" in statement:
                lookups.append(statement)

        event.listen(state.of(app).get(Database).engine.sync_engine, "before_cursor_execute", count)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://chatlens.test") as c:
            yield Running(app=app, client=c, lookups=lookups, clock=clock)


@pytest.fixture
async def cached(fresh_database_url: Any) -> AsyncIterator[Running]:
    async for running in _running(await fresh_database_url("keycache"), TTL_S):
        yield running


@pytest.fixture
async def uncached(fresh_database_url: Any) -> AsyncIterator[Running]:
    async for running in _running(await fresh_database_url("nokeycache"), 0):
        yield running


async def test_a_key_is_looked_up_once_per_ttl(cached: Running) -> None:
    key, _ = await cached.new_key()
    for _ in range(5):
        assert (await cached.me(key)).status_code == 200
    assert len(cached.lookups) == 1
    cached.clock.advance(TTL_S - 1)
    assert (await cached.me(key)).status_code == 200
    assert len(cached.lookups) == 1
    cached.clock.advance(1)
    assert (await cached.me(key)).status_code == 200
    assert len(cached.lookups) == 2


async def test_a_keys_use_is_recorded_where_the_route_has_no_session(cached: Running) -> None:
    key, key_id = await cached.new_key()
    async with state.of(cached.app).get(Database).sessionmaker() as session:
        assert (await session.get(ApiKey, key_id)).last_used_at is None  # type: ignore[union-attr]
    # /v1/models reads no database itself: the key's lookup commits its last use.
    response = await cached.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    async with state.of(cached.app).get(Database).sessionmaker() as session:
        stored = await session.get(ApiKey, key_id)
    assert stored is not None and stored.last_used_at is not None


async def test_a_cached_key_opens_no_database_connection(fresh_database_url: Any) -> None:
    # No background loop may take a connection meanwhile: no gauges, the others far apart.
    quiet = {"metrics_enabled": False, "active_model_refresh_seconds": 3600.0}
    url = await fresh_database_url("keycache_quiet")
    checkouts: list[object] = []
    async for running in _running(url, TTL_S, request_stats_flush_seconds=3600.0, **quiet):
        pool_events = state.of(running.app).get(Database).engine.sync_engine
        event.listen(pool_events, "checkout", lambda *args: checkouts.append(args))
        key, _ = await running.new_key()
        headers = {"Authorization": f"Bearer {key}"}
        checkouts.clear()
        # /v1/models reads no database itself; the first request looks the key up.
        assert (await running.client.get("/v1/models", headers=headers)).status_code == 200
        assert len(checkouts) >= 1
        checkouts.clear()
        for _ in range(3):
            assert (await running.client.get("/v1/models", headers=headers)).status_code == 200
        assert checkouts == []


async def test_an_unknown_key_is_never_cached(cached: Running) -> None:
    for _ in range(3):
        response = await cached.me("cl_" + "x" * 43)
        assert response.status_code == 401
    assert len(cached.lookups) == 3


async def test_revoked_through_the_api_it_fails_at_once(cached: Running) -> None:
    key, key_id = await cached.new_key()
    admin_key, _ = await cached.new_key(admin=True)
    assert (await cached.me(key)).status_code == 200  # cached now
    admin = {"Authorization": f"Bearer {admin_key}"}
    assert (
        await cached.client.delete(f"/api/admin/keys/{key_id}", headers=admin)
    ).status_code == 204
    refused = await cached.me(key)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "API key has been revoked"


async def test_revoked_elsewhere_it_fails_within_the_ttl(cached: Running) -> None:
    key, key_id = await cached.new_key()
    assert (await cached.me(key)).status_code == 200
    await cached.revoke_in_database(key_id)
    assert (await cached.me(key)).status_code == 200  # this replica has not looked again yet
    cached.clock.advance(TTL_S)
    assert (await cached.me(key)).status_code == 401


async def test_without_the_cache_every_request_looks_the_key_up(uncached: Running) -> None:
    key, key_id = await uncached.new_key()
    for _ in range(3):
        assert (await uncached.me(key)).status_code == 200
    assert len(uncached.lookups) == 3
    await uncached.revoke_in_database(key_id)
    assert (await uncached.me(key)).status_code == 401


async def test_a_key_read_before_its_revocation_is_not_cached_after_it() -> None:
    cache = auth.KeyCache(ttl_s=60)
    principal = auth.Principal(user_id=uuid.uuid4(), name="u", is_admin=False)
    cache.put("hash", principal)
    assert cache.get("hash") == principal
    cache.forget("hash")  # the revocation is committed
    # A request that looked the key up before that commit, and ends only now.
    cache.put("hash", principal)
    assert cache.get("hash") is None
