"""Profiling on demand: an admin samples the running worker, or one request, without a restart."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatlens import state
from chatlens.app import create_app
from chatlens.health.profiling import RequestProfiling
from chatlens.models import Message
from chatlens.observability.profiling import Profiling
from chatlens.settings import Settings, load_settings
from tests.conftest import Account

pytestmark = pytest.mark.asyncio


def _frames(speedscope: dict[str, Any]) -> set[str]:
    """The files of every frame of a speedscope profile."""
    return {frame.get("file") or "" for frame in speedscope["shared"]["frames"]}


def _chatlens_frames(speedscope: dict[str, Any]) -> set[str]:
    return {f for f in _frames(speedscope) if "chatlens" in f.replace("\\", "/").split("/")}


async def _profiling_started(app: Any, task: asyncio.Task[Any]) -> None:
    """Once the profile `task` asked for holds the worker's profiler."""
    started = asyncio.create_task(state.of(app).get(Profiling).started.wait())
    await asyncio.wait({started, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    assert state.of(app).get(Profiling).busy or task.done(), "the profile never started"


async def _ask(client: httpx.AsyncClient, account: Account, n: int) -> None:
    for i in range(n):
        response = await client.post(
            "/chat", json={"message": f"Where is my order {i}?"}, headers=account.headers
        )
        assert response.status_code == 200


async def test_an_admin_samples_the_worker_while_it_serves(
    app: Any, client: httpx.AsyncClient, admin: Account, account: Account
) -> None:
    profile = asyncio.create_task(
        client.get(
            "/api/admin/profile",
            params={"seconds": 0.5, "format": "speedscope"},
            headers=admin.headers,
        )
    )
    await _profiling_started(app, profile)
    await _ask(client, account, 20)  # served while the profile runs
    response = await profile
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = orjson.loads(response.content)
    assert body["$schema"].startswith("https://www.speedscope.app/")
    # The requests served meanwhile are in it: chatlens's own request handling was sampled.
    frames = _chatlens_frames(body)
    assert any(f.endswith("observability/middleware.py") for f in frames), frames


async def test_the_html_profile_is_a_sandboxed_page_that_loads_nothing(
    client: httpx.AsyncClient, admin: Account
) -> None:
    response = await client.get(
        "/api/admin/profile", params={"seconds": 0.05}, headers=admin.headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy
    assert "pyinstrument" in response.text
    assert "http://" not in response.text.replace("http://www.w3.org", "")
    assert "<script src=" not in response.text


async def test_one_profile_at_a_time_per_worker(
    app: Any, client: httpx.AsyncClient, admin: Account
) -> None:
    first = asyncio.create_task(
        client.get("/api/admin/profile", params={"seconds": 0.5}, headers=admin.headers)
    )
    await _profiling_started(app, first)
    second = await client.get("/api/admin/profile", params={"seconds": 0.01}, headers=admin.headers)
    assert second.status_code == 409
    assert second.json()["error"]["type"] == "conflict"
    assert (await first).status_code == 200


@pytest.mark.parametrize("seconds", ["0", "-1", "121", "abc"])
async def test_a_duration_out_of_range_is_refused(
    client: httpx.AsyncClient, admin: Account, seconds: str
) -> None:
    response = await client.get(
        "/api/admin/profile", params={"seconds": seconds}, headers=admin.headers
    )
    assert response.status_code == 422
    assert "seconds" in response.json()["error"]["message"]


async def test_only_admins_may_profile(client: httpx.AsyncClient, account: Account) -> None:
    assert (await client.get("/api/admin/profile")).status_code == 401
    response = await client.get("/api/admin/profile", headers=account.headers)
    assert response.status_code == 403


async def test_an_admin_profiles_one_request_by_header(
    client: httpx.AsyncClient,
    admin: Account,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    response = await client.post(
        "/chat",
        json={"message": "Where is my order?"},
        headers={**admin.headers, "X-Chatlens-Profile": "speedscope"},
    )
    assert response.status_code == 200
    assert response.headers["x-chatlens-profiled-status"] == "200"
    body = orjson.loads(response.content)
    assert any("/chat/" in f for f in _chatlens_frames(body))
    # The request itself ran: its turn is stored.
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 2


async def test_the_query_flag_works_too_and_keeps_the_routes_status(
    client: httpx.AsyncClient, admin: Account
) -> None:
    response = await client.get(
        "/api/conversations/00000000-0000-0000-0000-000000000000",
        params={"profile": "html"},
        headers=admin.headers,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-chatlens-profiled-status"] == "404"


async def test_the_flag_of_anyone_but_an_admin_is_ignored(
    client: httpx.AsyncClient, account: Account
) -> None:
    for headers in (account.headers, {"Authorization": "Bearer cl_not-a-key"}, {}):
        response = await client.get("/api/me", headers={**headers, "X-Chatlens-Profile": "html"})
        assert "x-chatlens-profiled-status" not in response.headers
        assert response.headers["content-type"] == "application/json"
    assert (await client.get("/api/me", headers=account.headers)).status_code == 200


async def test_off_in_production_unless_enabled(settings: Settings) -> None:
    production = load_settings(
        database_url=settings.database_url, environment="production", bootstrap_admin=False
    )
    assert not production.should_allow_profiling
    assert production.model_copy(update={"profiling_enabled": True}).should_allow_profiling
    assert settings.should_allow_profiling  # test and development environments

    # Neither the route nor the middleware exists: an unused profiler costs nothing.
    app = create_app(production)
    paths = {getattr(route, "path", "") for route in app.routes}
    assert "/api/admin/profile" not in paths
    assert RequestProfiling not in {middleware.cls for middleware in app.user_middleware}
    enabled = create_app(production.model_copy(update={"profiling_enabled": True}))
    assert RequestProfiling in {middleware.cls for middleware in enabled.user_middleware}


async def test_a_wrong_key_with_the_flag_is_counted_as_a_refused_key(
    client: httpx.AsyncClient,
) -> None:
    def refused() -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics_text.splitlines()
            if line.startswith("auth_failures_total{")
        )

    metrics_text = (await client.get("/metrics")).text
    before = refused()
    wrong = {"Authorization": "Bearer cl_" + "x" * 43, "X-Chatlens-Profile": "html"}
    # A route that needs no key: only the flag's check sees the key.
    response = await client.get("/health/live", headers=wrong)
    assert response.json() == {"status": "alive"}
    metrics_text = (await client.get("/metrics")).text
    assert refused() == before + 1
    # A route that needs one: refused once, counted once (the flag's verdict is reused).
    response = await client.get("/api/conversations", headers=wrong)
    assert response.status_code == 401
    metrics_text = (await client.get("/metrics")).text
    assert refused() == before + 2
