"""Metrics move as users would expect, read from the real /metrics output."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Server

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text exposition, keyed by (name, labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


@pytest.mark.asyncio
async def test_a_chat_turn_moves_every_related_metric(
    client: httpx.AsyncClient, account: Any
) -> None:
    before = await scrape(client)
    await client.post(
        "/chat",
        json={"message": "Where is my order?", "platform": "telegram", "project_id": "shop-m"},
        headers=account.headers,
    )
    second = await client.post(
        "/chat", json={"message": "let me talk to a human"}, headers=account.headers
    )
    await client.post(  # a second turn of a conversation is not a new conversation
        "/chat",
        json={"message": "thanks", "conversation_id": second.json()["conversation_id"]},
        headers=account.headers,
    )
    await client.post(
        "/api/conversations",
        json={"platform": "slack", "project_id": "shop-m"},
        headers=account.headers,
    )
    await client.get("/api/conversations/not-a-uuid", headers=account.headers)
    await client.get("/no/such/path")
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("http_requests_total", method="POST", route="/chat", status="200") == 3
    assert (
        delta(
            "http_requests_total",
            method="GET",
            route="/api/conversations/{conversation_id}",
            status="422",
        )
        == 1
    )
    assert delta("http_requests_total", method="GET", route="__unmatched__", status="404") == 1
    assert delta("http_request_duration_seconds_count", method="POST", route="/chat") == 3
    assert value(after, "http_requests_in_progress", method="POST", route="/chat") == 0
    assert delta("chat_requests_total", project_id="shop-m", platform="telegram") == 1
    assert delta("conversations_total", project_id="shop-m", platform="telegram") == 1
    assert delta("conversations_total", project_id="default", platform="web") == 1
    assert delta("conversations_total", project_id="shop-m", platform="slack") == 1
    assert delta("messages_total", platform="telegram", intent="order_status") == 1
    assert delta("escalations_total", platform="web", reason="user_request") == 1
    assert delta("ai_tokens_total", model="builtin-kb", type="prompt") > 0
    assert delta("ai_tokens_total", model="builtin-kb", type="completion") > 0
    assert delta("ai_time_to_first_token_seconds_count", model="builtin-kb") == 3
    assert delta("response_time_seconds_count", service="ai", endpoint="/chat") == 3
    assert delta("intent_confidence_count", intent="order_status") == 1
    assert value(after, "inference_up", backend="builtin") == 1
    assert value(after, "app_info", version="0.1.0", environment="test") == 1
    assert value(after, "sse_streams_active") == 0
    # Raw paths never become labels.
    assert "not-a-uuid" not in after
    assert "/no/such/path" not in after
    assert "process_resident_memory_bytes" in after


@pytest.mark.asyncio
async def test_streams_are_counted_while_open_and_exemplars_carry_trace_ids(
    client: httpx.AsyncClient, account: Any
) -> None:
    response = await client.post(
        "/chat", json={"message": "hello", "stream": True}, headers=account.headers
    )
    trace_id = response.headers["x-trace-id"]
    openmetrics = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
    exemplars = re.findall(
        r'^http_request_duration_seconds_bucket\{[^}]*route="/chat"[^}]*\} \S+ '
        r'# \{trace_id="([0-9a-f]{32})"\}',
        openmetrics.text,
        re.MULTILINE,
    )
    assert trace_id in exemplars
    classic = await scrape(client)
    assert "# {trace_id" not in classic  # exemplars only in OpenMetrics


def _served_per_worker(metrics_dir: Path) -> dict[str, float]:
    """POST /chat requests counted so far, by worker pid, from each worker's own file."""
    served = {
        path.stem.removeprefix("counter_"): sum(
            v
            for key, v, _, _ in MmapedDict.read_all_values_from_file(str(path))
            if '"http_requests_total"' in key and '"/chat"' in key
        )
        for path in metrics_dir.glob("counter_*.db")
    }
    return {pid: count for pid, count in served.items() if count > 0}


def _started_workers(server: Server, count: int) -> set[str]:
    """The pids of the workers once `count` have logged service_started (bounded)."""
    deadline = time.monotonic() + 60
    while True:
        pids = {
            str(record["pid"])
            for record in map(json.loads, server.lines())
            if record["event"] == "service_started"
        }
        if len(pids) >= count:
            return pids
        assert time.monotonic() < deadline, f"{len(pids)} of {count} workers started"
        time.sleep(0.1)


def test_two_worker_processes_are_summed(
    tmp_path: Path, env_without_chatlens: dict[str, str]
) -> None:
    metrics_dir = tmp_path / "metrics"
    env = {**env_without_chatlens, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # wiped at start
    server = Server(tmp_path, env, "--workers", "2")
    try:
        key_match = KEY.search(server.output)
        assert key_match is not None
        headers = {"Authorization": f"Bearer {key_match.group()}"}
        pids = _started_workers(server, 2)

        def ask(_: int) -> int:
            with httpx.Client(base_url=server.url, timeout=30) as c:  # a new connection
                return c.post("/chat", json={"message": "hi"}, headers=headers).status_code

        # Which worker accepts a connection is the kernel's choice: requests go in
        # concurrent rounds, on new connections, until both workers have served some
        # (bounded). Each counts what it served in a file of its own, so the test knows
        # exactly what each one did, and /metrics must show exactly their sum.
        sent = 0
        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(max_workers=8) as pool:
            while sent < 40 or len(_served_per_worker(metrics_dir)) < 2:
                assert time.monotonic() < deadline, _served_per_worker(metrics_dir)
                assert list(pool.map(ask, range(8))) == [200] * 8
                sent += 8
        # A worker counts a request once its response is sent: the last ones may still be
        # on their way into the files when the client has its answers (bounded wait).
        while sum(_served_per_worker(metrics_dir).values()) < sent:
            assert time.monotonic() < deadline, _served_per_worker(metrics_dir)
            time.sleep(0.01)
        per_worker = _served_per_worker(metrics_dir)
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()
    assert not (metrics_dir / "counter_999999.db").exists()  # wiped at start
    assert set(per_worker) == pids, (per_worker, pids)
    # /metrics shows the sum of what the two workers counted, each on its own.
    assert sum(per_worker.values()) == sent
    assert value(text, "http_requests_total", method="POST", route="/chat", status="200") == sent
    assert value(text, "chat_requests_total", project_id="default", platform="web") == sent
    assert value(text, "http_request_duration_seconds_count", method="POST", route="/chat") == sent
    assert value(text, "http_requests_in_progress", method="POST", route="/chat") == 0
    assert value(text, "inference_up", backend="builtin") == 1


@pytest.mark.asyncio
async def test_active_sessions_is_read_from_the_database(settings: Any, account: Any) -> None:
    import asyncio

    from chatlens.app import create_app
    from tests.helpers import make_settings

    app = create_app(make_settings(settings.database_url, active_sessions_refresh_seconds=0.05))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for text in ("hello", "where is my order"):
                await client.post("/chat", json={"message": text}, headers=account.headers)
            seen = 0.0
            for _ in range(60):  # bounded: 3 s at most
                seen = value(await scrape(client), "active_sessions")
                if seen == 2:
                    break
                await asyncio.sleep(0.05)
    assert seen == 2


def test_label_children_are_the_ones_prometheus_client_gives() -> None:
    """labels() answers from a dict once a child is known, and the values stay distinct."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from chatlens.observability.metrics import Labelled

    registry = CollectorRegistry()
    counter = Labelled(Counter, "things_total", "Things.", ["kind"], registry=registry)
    counter.labels("a").inc()
    assert counter.labels("a") is counter.labels(kind="a")
    counter.labels("a").inc()
    counter.labels(True).inc()  # True == 1 == 1.0, yet "True", "1" and "1.0" differ
    counter.labels(1).inc()
    counter.labels(1.0).inc()
    counter.remove("a")
    counter.labels("a").inc()  # a fresh child, that /metrics shows
    text = generate_latest(registry).decode()
    assert 'things_total{kind="a"} 1.0' in text
    for value in ("True", "1", "1.0"):
        assert f'things_total{{kind="{value}"}} 1.0' in text
    counter.clear()
    counter.labels("a").inc()
    assert 'things_total{kind="a"} 1.0' in generate_latest(registry).decode()
