"""Wrong keys in a row are counted by reason, logged as a sample, and can raise an alert."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatlens.auth import service as auth
from chatlens.auth.failures import AuthFailures
from chatlens.observability.metrics import Metrics
from tests.helpers import ManualClock, Server, make_settings

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")


def _failures(text: str) -> dict[str, float]:
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "auth_failures_total"
    }


def test_two_thousand_wrong_keys_are_counted_and_logged_a_few_times(
    tmp_path: Path, env_without_chatlens: dict[str, str]
) -> None:
    unknown = "cl_" + "W" * 43  # a key's shape, but no such key
    server = Server(tmp_path, env_without_chatlens)
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for number in range(2000):
                assert time.monotonic() < deadline, "2,000 requests took over 2 minutes"
                if number % 4 == 0:
                    headers = {}  # missing
                elif number % 4 == 1:
                    headers = {"Authorization": f"Bearer guess-{number}"}  # malformed
                else:
                    headers = {"Authorization": f"Bearer {unknown}"}
                assert client.get("/api/me", headers=headers).status_code == 401
            metrics = client.get("/metrics").text
    finally:
        server.stop()

    # Every reason is there from the start, so a first burst is an increase rate() sees.
    assert _failures(metrics) == {
        "missing": 500,
        "malformed": 500,
        "unknown_key": 1000,
        "revoked": 0,
        "external_refused": 0,
    }
    lines = [orjson.loads(line) for line in server.lines()]
    warnings = [line for line in lines if line["event"] == "auth_failed"]
    # One line per address and reason in the interval, not one per request.
    assert sorted(line["reason"] for line in warnings) == ["malformed", "missing", "unknown_key"]
    assert {line["level"] for line in warnings} == {"WARNING"}
    assert {line["client_ip"] for line in warnings} == {"127.0.0.1"}
    everything = server.output
    assert unknown not in everything and "guess-1" not in everything


def test_suppressed_failures_are_counted_on_the_next_line() -> None:
    clock = ManualClock()
    metrics = Metrics(settings=make_settings("sqlite+aiosqlite://"))
    failures = AuthFailures(interval_s=60, clock=clock)

    logged = [failures.record("unknown_key", source="203.0.113.9", metrics=metrics)]
    for _ in range(1999):
        logged.append(failures.record("unknown_key", source="203.0.113.9", metrics=metrics))
    # Another address, or another reason, is a line of its own.
    assert failures.record("unknown_key", source="198.51.100.4", metrics=metrics) == 0
    assert failures.record("revoked", source="203.0.113.9", metrics=metrics) == 0
    clock.advance(60)
    after = failures.record("unknown_key", source="203.0.113.9", metrics=metrics)

    assert logged[0] == 0 and logged[1:] == [None] * 1999
    assert after == 1999  # the line after the interval stands for the ones held back
    text = metrics.exposition(None)[0].decode()
    counted = {reason: value for reason, value in _failures(text).items() if value}
    assert counted == {"unknown_key": 2002, "revoked": 1}


@pytest.mark.asyncio
async def test_a_revoked_key_is_counted_as_revoked(
    client: httpx.AsyncClient, app: Any, sessionmaker: Any
) -> None:
    async with sessionmaker() as session, session.begin():
        user = await auth.create_user(session, name=f"u-{uuid.uuid4().hex[:8]}")
        row, key = await auth.create_key(session, user=user)
    async with sessionmaker() as session, session.begin():
        await auth.revoke_key(session, key_id_or_prefix=str(row.id))
    before = _failures((await client.get("/metrics")).text).get("revoked", 0)
    response = await client.get("/api/me", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "API key has been revoked"
    after = _failures((await client.get("/metrics")).text).get("revoked", 0)
    assert after - before == 1
