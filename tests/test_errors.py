"""Every error is JSON in one shape, with the request id, and never a stack trace."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from chatlens.app import create_app
from chatlens.settings import Settings
from tests.helpers import make_settings

pytestmark = pytest.mark.asyncio


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    response = await client.get("/chat")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "method_not_allowed"


async def test_request_id_is_accepted_when_valid_and_replaced_when_not(
    client: httpx.AsyncClient,
) -> None:
    kept = await client.get("/nope", headers={"X-Request-ID": "abc-123.X_y"})
    assert kept.headers["x-request-id"] == "abc-123.X_y"
    assert kept.json()["error"]["request_id"] == "abc-123.X_y"
    for bad in ("has space", "x" * 129, "semi;colon"):
        replaced = await client.get("/nope", headers={"X-Request-ID": bad})
        assert replaced.headers["x-request-id"] != bad
        assert len(replaced.headers["x-request-id"]) == 32


async def test_an_unexpected_exception_is_a_json_500_without_details(settings: Settings) -> None:
    app = create_app(make_settings(settings.database_url))
    boom = APIRouter()

    @boom.get("/boom")
    async def explode() -> Any:
        raise RuntimeError("secret connection string postgres://u:p@db")

    app.include_router(boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "type": "internal_error",
            "message": "internal server error",
            "request_id": "req-500",
        }
    }
    assert response.headers["x-request-id"] == "req-500"
    assert "secret" not in response.text and "Traceback" not in response.text
