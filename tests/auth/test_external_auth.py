"""CHATLENS_AUTH_VALIDATE_URL: tokens judged by a real HTTP auth service on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatlens import state
from chatlens.app import create_app
from chatlens.db import migrate
from chatlens.db.session import Database
from chatlens.observability.deps import Telemetry
from tests.asgi_server import serving
from tests.helpers import ManualClock, free_port, make_settings

pytestmark = pytest.mark.asyncio

INTERNAL_KEY = "internal-secret-123"
TOKENS = {"tok-alice": ("alice-1", False), "tok-root": ("root-7", True)}


@dataclass
class FakeAuth:
    """Answers like seed 004's auth service; counts the calls it gets."""

    calls: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def validate(self, request: Request) -> Response:
        self.calls.append(dict(request.headers))
        if request.headers.get("x-internal-api-key") != INTERNAL_KEY:
            return JSONResponse({"detail": "bad internal key"}, status_code=403)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in TOKENS:
            return JSONResponse({"detail": "invalid token"}, status_code=401)
        user_id, is_admin = TOKENS[token]
        return JSONResponse({"user_id": user_id, "is_admin": is_admin})


@pytest.fixture(scope="module")
def fake_auth() -> Iterator[FakeAuth]:
    fake = FakeAuth()
    app = Starlette(routes=[Route("/auth/validate", fake.validate)])
    with serving(app) as port:
        fake.url = f"http://127.0.0.1:{port}/auth/validate"
        yield fake


@dataclass
class Running:
    app: FastAPI
    client: httpx.AsyncClient
    clock: ManualClock

    def errors(self, error_type: str) -> float:
        value = (
            state.of(self.app)
            .get(Telemetry)
            .metrics.registry.get_sample_value(
                "errors_total", {"error_type": error_type, "service": "auth"}
            )
        )
        return float(value or 0.0)


async def _running(url: str, **overrides: Any) -> AsyncIterator[Running]:
    settings = make_settings(url, auth_internal_api_key=INTERNAL_KEY, **overrides)
    await migrate.upgrade(settings)
    clock = ManualClock()
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://chatlens.test") as c:
            yield Running(app=app, client=c, clock=clock)


@pytest.fixture
async def chatlens(fresh_database_url: Any, fake_auth: FakeAuth) -> AsyncIterator[Running]:
    fake_auth.calls.clear()
    url = await fresh_database_url("extauth")
    async for running in _running(
        url,
        auth_validate_url=fake_auth.url,
        auth_cache_ttl_seconds=300,
        auth_negative_ttl_seconds=10,
    ):
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_valid_token_is_a_user_created_on_first_sight_then_cached(
    chatlens: Running, fake_auth: FakeAuth
) -> None:
    first = await chatlens.client.get("/api/me", headers=bearer("tok-alice"))
    assert first.status_code == 200, first.text
    assert first.json()["name"] == "ext:alice-1"
    assert first.json()["is_admin"] is False
    [call] = fake_auth.calls
    assert call["x-internal-api-key"] == INTERNAL_KEY
    assert call["authorization"] == "Bearer tok-alice"
    # Cached: the next requests do not reach the auth service, and can chat.
    chat = await chatlens.client.post(
        "/chat", json={"message": "where is my order?"}, headers=bearer("tok-alice")
    )
    assert chat.status_code == 200
    again = await chatlens.client.get("/api/me", headers=bearer("tok-alice"))
    assert again.json()["id"] == first.json()["id"]
    assert len(fake_auth.calls) == 1
    # After the TTL the service is asked again; the same user row is found.
    chatlens.clock.advance(299)
    assert (await chatlens.client.get("/api/me", headers=bearer("tok-alice"))).status_code == 200
    assert len(fake_auth.calls) == 1
    chatlens.clock.advance(1)
    later = await chatlens.client.get("/api/me", headers=bearer("tok-alice"))
    assert later.json()["id"] == first.json()["id"]
    assert len(fake_auth.calls) == 2


async def test_admin_comes_from_the_auth_service(chatlens: Running) -> None:
    root = await chatlens.client.get("/api/admin/users", headers=bearer("tok-root"))
    assert root.status_code == 200
    alice = await chatlens.client.get("/api/admin/users", headers=bearer("tok-alice"))
    assert alice.status_code == 403


async def test_an_invalid_token_is_401_and_briefly_cached(
    chatlens: Running, fake_auth: FakeAuth
) -> None:
    for _ in range(3):
        response = await chatlens.client.get("/api/me", headers=bearer("tok-nobody"))
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "unauthorized"
    assert len(fake_auth.calls) == 1
    chatlens.clock.advance(10)
    assert (await chatlens.client.get("/api/me", headers=bearer("tok-nobody"))).status_code == 401
    assert len(fake_auth.calls) == 2


async def test_chatlens_keys_still_work_locally(
    chatlens: Running, fake_auth: FakeAuth, make_account_on: Any
) -> None:
    key = await make_account_on(chatlens.app)
    response = await chatlens.client.get("/api/me", headers=bearer(key))
    assert response.status_code == 200
    assert fake_auth.calls == []


async def test_an_unreachable_auth_service_is_503_not_401(fresh_database_url: Any) -> None:
    url = await fresh_database_url("extauth-down")
    closed = f"http://127.0.0.1:{free_port()}/auth/validate"
    async for running in _running(url, auth_validate_url=closed):
        before = running.errors("auth_unavailable")
        response = await running.client.get("/api/me", headers=bearer("tok-alice"))
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "auth_unavailable"
        assert "retry-after" in response.headers
        assert running.errors("auth_unavailable") == before + 1
        # Not cached as invalid: it is asked again (and still down).
        again = await running.client.get("/api/me", headers=bearer("tok-alice"))
        assert again.status_code == 503


@pytest.fixture
def make_account_on() -> Any:
    from chatlens.auth import service as auth

    async def make(app: FastAPI) -> str:
        async with state.of(app).get(Database).sessionmaker() as session, session.begin():
            user = await auth.create_user(session, name="local-admin", is_admin=True)
            _, key = await auth.create_key(session, user=user)
        return key

    return make
