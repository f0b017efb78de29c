"""A chatlens app answering through the openai backend from a FakeUpstream, for tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from chatlens import state
from chatlens.app import create_app
from chatlens.auth import service as auth
from chatlens.db import migrate
from chatlens.db.session import Database
from chatlens.inference.deps import Inference
from chatlens.observability.deps import Telemetry
from tests.helpers import make_settings
from tests.upstream import FakeUpstream

MODEL = "gpt-4o-mini"  # the fake answers it as `ok`; the shipped price table knows it


@dataclass
class Running:
    app: FastAPI
    client: httpx.AsyncClient
    headers: dict[str, str]
    admin_headers: dict[str, str]
    admin_id: uuid.UUID

    def use_model(self, model: str) -> None:
        state.of(self.app).get(Inference).active_model.current = model

    def metric(self, name: str, **labels: str) -> float:
        value = state.of(self.app).get(Telemetry).metrics.registry.get_sample_value(name, labels)
        return float(value or 0.0)


@asynccontextmanager
async def running(url: str, upstream: FakeUpstream, **overrides: Any) -> AsyncIterator[Running]:
    settings = make_settings(
        url,
        inference_backend="openai",
        openai_base_url=upstream.url,
        openai_api_key="sk-upstream-secret",
        model=MODEL,
        upstream_max_retries=1,
        upstream_first_token_timeout_seconds=0.5,
        **overrides,
    )
    await migrate.upgrade(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with state.of(app).get(Database).sessionmaker() as session, session.begin():
            user = await auth.create_user(session, name=f"u-{uuid.uuid4().hex[:8]}")
            _, key = await auth.create_key(session, user=user)
            admin = await auth.create_user(session, name=f"a-{uuid.uuid4().hex[:8]}", is_admin=True)
            _, admin_key = await auth.create_key(session, user=admin)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://chatlens.test") as c:
            yield Running(
                app=app,
                client=c,
                headers={"Authorization": f"Bearer {key}"},
                admin_headers={"Authorization": f"Bearer {admin_key}"},
                admin_id=admin.id,
            )
