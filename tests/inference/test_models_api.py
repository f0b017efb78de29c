"""GET /api/models and the admin's swap, stored in the database for every replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from chatlens import state
from chatlens.db.session import Database
from chatlens.inference.deps import Inference
from chatlens.models import RuntimeSetting
from tests.upstream import MODELS, FakeUpstream
from tests.upstream_app import MODEL, Running, running

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
async def database(fresh_database_url: Any) -> str:
    url: str = await fresh_database_url("models")
    return url


@pytest.fixture
async def chatlens(database: str, upstream: FakeUpstream) -> AsyncIterator[Running]:
    async with running(database, upstream, active_model_refresh_seconds=0.1) as result:
        yield result


async def test_lists_the_backends_models_and_marks_the_active_one(chatlens: Running) -> None:
    response = await chatlens.client.get("/api/models", headers=chatlens.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["backend"] == "openai"
    assert body["active"] == MODEL
    assert {m["id"] for m in body["models"]} == set(MODELS)
    assert [m["id"] for m in body["models"] if m["active"]] == [MODEL]


async def test_ids_that_are_not_names_leave_the_list_readable(
    database: str, upstream: FakeUpstream
) -> None:
    # Any JSON value may come as an id: a list or an object cannot even be compared.
    upstream.odd_ids = [["gpt-4o"], {"name": "x"}, None, 7, "m" * 300]
    try:
        async with running(database, upstream) as chatlens:
            listed = await chatlens.client.get("/api/models", headers=chatlens.headers)
            relayed = await chatlens.client.get("/v1/models", headers=chatlens.headers)
    finally:
        upstream.odd_ids = []
    assert listed.status_code == 200, listed.text
    assert {m["id"] for m in listed.json()["models"]} == set(MODELS)
    assert relayed.status_code == 200, relayed.text
    assert {m["id"] for m in relayed.json()["data"]} == set(MODELS)


async def test_a_model_list_of_megabytes_is_refused_not_read_whole(
    database: str, upstream: FakeUpstream
) -> None:
    # About 11 MiB of ids: past what a list of models can be (8 MiB are read at most).
    upstream.odd_ids = [f"{i:06d}" + "m" * 100 for i in range(100_000)]
    try:
        async with running(database, upstream) as chatlens:
            listed = await chatlens.client.get("/api/models", headers=chatlens.headers)
            health = await chatlens.client.get("/health")
    finally:
        upstream.odd_ids = []
    assert listed.status_code == 502, listed.text
    assert "longer than 8 MiB" in listed.json()["error"]["message"]
    assert health.json()["services"]["ai_service"]["status"] != "healthy", health.json()


async def test_only_an_admin_swaps_and_only_to_a_listed_model(chatlens: Running) -> None:
    swap = {"model": "ok"}
    forbidden = await chatlens.client.post("/api/models/swap", json=swap, headers=chatlens.headers)
    assert forbidden.status_code == 403
    unknown = await chatlens.client.post(
        "/api/models/swap", json={"model": "gpt-9"}, headers=chatlens.admin_headers
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "model_not_found"
    assert state.of(chatlens.app).get(Inference).active_model.current == MODEL


async def test_a_swap_reaches_every_replica_and_records_the_admin(
    chatlens: Running, database: str, upstream: FakeUpstream
) -> None:
    async with running(database, upstream, active_model_refresh_seconds=0.1) as replica:
        response = await chatlens.client.post(
            "/api/models/swap", json={"model": "ok"}, headers=chatlens.admin_headers
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"active": "ok", "previous": MODEL}
        async with state.of(chatlens.app).get(Database).sessionmaker() as session:
            stored = await session.get(RuntimeSetting, "active_model:openai")
        assert stored is not None
        assert (stored.value, stored.updated_by) == ("ok", chatlens.admin_id)
        # The other replica reads the stored choice on its next refresh.
        for _ in range(50):
            if state.of(replica.app).get(Inference).active_model.current == "ok":
                break
            await asyncio.sleep(0.05)
        assert state.of(replica.app).get(Inference).active_model.current == "ok"
        answer = await replica.client.post(
            "/chat", json={"message": "hello"}, headers=replica.headers
        )
        assert answer.json()["model"] == "ok"
    # A restart keeps it too.
    async with running(database, upstream) as restarted:
        assert state.of(restarted.app).get(Inference).active_model.current == "ok"
