"""The health routes of a running app: no auth, documented shapes, nothing secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from chatlens import __version__
from chatlens.settings import Settings

pytestmark = pytest.mark.asyncio


def _secrets(settings: Settings) -> list[str]:
    """Pieces of the database URL that must never appear in a health response."""
    url = settings.database
    pieces = [settings.database_url, url.render_as_string(hide_password=True)]
    pieces += [str(p) for p in (url.host, url.username, url.password, url.database) if p]
    return pieces


async def test_live_and_ready_answer_without_credentials(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    ready = await client.get("/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_db_reports_healthy_with_a_latency(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/health/db")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "latency_ms"}
    assert body["status"] == "healthy"
    assert 0 <= body["latency_ms"] < 1000
    assert not any(secret in response.text for secret in _secrets(settings))


async def test_health_is_healthy_with_database_and_ai_and_no_redis_key(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "timestamp", "version", "uptime_seconds", "services"}
    assert body["status"] == "healthy"
    assert body["version"] == __version__
    assert body["uptime_seconds"] >= 0
    assert body["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)
    # Redis is not configured in the suite's settings: no key, not a null.
    assert set(body["services"]) == {"database", "ai_service"}
    for service in body["services"].values():
        assert service["status"] == "healthy"
        assert service["latency_ms"] >= 0
        assert "error" not in service
    assert not any(secret in response.text for secret in _secrets(settings))


async def test_openapi_documents_the_models_and_the_503s(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert {"HealthRead", "ServiceHealthRead", "DatabaseHealthRead"} <= set(schemas)
    assert schemas["HealthRead"]["properties"]["status"]["enum"] == [
        "healthy",
        "degraded",
        "unhealthy",
    ]
    for path in ("/health", "/health/db", "/health/ready"):
        operation = spec["paths"][path]["get"]
        assert "503" in operation["responses"], path
        assert "security" not in operation, path
    assert "security" not in spec["paths"]["/health/live"]["get"]
    assert spec["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/HealthRead"}
