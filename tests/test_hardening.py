"""Headers every response carries, API docs off in production, CORS by a setting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from chatlens.app import create_app
from chatlens.settings import Settings, load_settings
from tests.conftest import Account

API_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


@asynccontextmanager
async def client_of(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://chatlens.test") as c:
            yield c


def sqlite_settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'chatlens.db'}",
        bootstrap_admin=False,
        **{"environment": "test", **overrides},
    )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/conversations", 200),
        ("GET", "/api/conversations", 401),  # without a key
        ("GET", "/nowhere", 404),
        ("POST", "/chat", 422),
        ("GET", "/health/live", 200),
        ("GET", "/metrics", 200),
    ],
)
async def test_api_responses_cannot_be_sniffed_framed_or_cached(
    client: httpx.AsyncClient, make_account: object, method: str, path: str, status: int
) -> None:
    account: Account = await make_account()  # type: ignore[operator]
    headers = account.headers if status != 401 else {}
    response = await client.request(
        method, path, headers=headers, json={} if method == "POST" else None
    )
    assert response.status_code == status
    for name, value in API_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)


async def test_pages_keep_their_own_policy_and_static_files_stay_cacheable(
    client: httpx.AsyncClient,
) -> None:
    home = await client.get("/")
    assert home.headers["content-security-policy"] == "default-src 'self'; frame-ancestors 'none'"
    docs = await client.get("/docs")
    assert docs.status_code == 200
    # Swagger UI's inline set-up still runs, and nothing loads from another origin (ReDoc's
    # bundle links a logo on its own CDN: the browser is not allowed to fetch it).
    policy = docs.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self' 'unsafe-inline'" in policy
    assert "frame-ancestors 'none'" in policy and "https:" not in policy
    assert (await client.get("/redoc")).headers["content-security-policy"] == policy
    assert docs.headers["x-frame-options"] == "DENY"
    asset = await client.get("/static/favicon.svg")
    assert asset.status_code == 200
    assert "no-store" not in asset.headers.get("cache-control", "")
    assert asset.headers["x-content-type-options"] == "nosniff"


async def test_production_serves_no_api_description_unless_enabled(tmp_path: Path) -> None:
    async with client_of(sqlite_settings(tmp_path, environment="production")) as client:
        for path in ("/openapi.json", "/docs", "/redoc"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["type"] == "not_found"
        home = (await client.get("/")).text
        assert 'href="/docs"' not in home  # the start page links to no missing page
        assert "CHATLENS_DOCS_ENABLED" in home
    enabled = sqlite_settings(tmp_path, environment="production", docs_enabled=True)
    async with client_of(enabled) as client:
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "chatlens"
        assert (await client.get("/docs")).status_code == 200
    async with client_of(sqlite_settings(tmp_path, docs_enabled=False)) as client:
        assert (await client.get("/openapi.json")).status_code == 404


PREFLIGHT = {
    "Origin": "https://shop.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_preflight_is_refused_in_json_when_no_origin_is_allowed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options("/chat", headers=PREFLIGHT)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "cors_preflight_refused"
    assert error["message"] == "CORS refuses this origin"
    assert error["request_id"] == response.headers["x-request-id"]
    assert response.headers["content-type"] == "application/json"
    assert "access-control-allow-origin" not in response.headers
    # A simple request from that origin is answered, but the browser may not read it.
    live = await client.get("/health/live", headers={"Origin": "https://shop.example"})
    assert "access-control-allow-origin" not in live.headers


async def test_an_allowed_origin_gets_its_preflight_and_reads_the_answer(
    tmp_path: Path,
) -> None:
    settings = sqlite_settings(
        tmp_path, cors_allow_origins="https://shop.example, https://help.example/"
    )
    async with client_of(settings) as client:
        response = await client.options("/chat", headers=PREFLIGHT)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        assert "POST" in response.headers["access-control-allow-methods"]
        live = await client.get("/health/live", headers={"Origin": "https://help.example"})
        assert live.headers["access-control-allow-origin"] == "https://help.example"
        assert "x-request-id" in live.headers["access-control-expose-headers"].lower()
        other = await client.options(
            "/chat", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert other.status_code == 400
        assert other.json()["error"]["type"] == "cors_preflight_refused"
        # An allowed origin asking for a method or a header the API does not take.
        odd = await client.options(
            "/chat",
            headers={
                **PREFLIGHT,
                "Access-Control-Request-Method": "TRACE",
                "Access-Control-Request-Headers": "x-other",
            },
        )
        assert odd.status_code == 400
        assert odd.json()["error"]["message"] == "CORS refuses this method, headers"
        assert "access-control-allow-methods" in odd.headers
