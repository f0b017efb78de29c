"""A request's ids stay with its own log lines, also when served in its caller's task."""

from __future__ import annotations

from typing import Any

import httpx

from chatlens.app import create_app
from chatlens.observability.context import get_request_id
from chatlens.observability.logging import context
from chatlens.settings import Settings
from tests.helpers import make_settings


async def test_lines_after_an_in_process_request_carry_none_of_its_ids(
    settings: Settings, make_account: Any
) -> None:
    account = await make_account()
    app_settings = make_settings(settings.database_url)
    # An in-process transport serves each request in the caller's task, as `chatlens
    # simulate` and the tests do: the request's fields must not outlive it there.
    app = create_app(app_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get(
                "/api/me", headers={**account.headers, "X-Request-ID": "req-ctx-1"}
            )
        assert response.status_code == 200
        # Every line merges the bound fields: a line logged here (service_stopped at the
        # end of such a run) would carry none of the request's.
        assert context() == {}
        assert get_request_id() is None
