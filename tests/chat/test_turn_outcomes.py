"""How a turn ended is counted whatever its HTTP status: a stream that fails after its 200
is a failure to the metrics and to the SLA, as the 502 of the same failure unstreamed is."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from chatlens.observability.metrics import TURN_OUTCOMES
from tests.helpers import parse_sse
from tests.upstream_app import Running

pytestmark = pytest.mark.asyncio


def _turns(chatlens: Running) -> dict[tuple[str, str], float]:
    return {
        (outcome, stream): chatlens.metric("chat_turns_total", outcome=outcome, stream=stream)
        for outcome in TURN_OUTCOMES
        for stream in ("true", "false")
    }


async def _sla(chatlens: Running) -> dict[str, Any]:
    response = await chatlens.client.get(
        "/api/sla", params={"window": "1h"}, headers=chatlens.admin_headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _chat(chatlens: Running, *, stream: bool) -> httpx.Response:
    return await chatlens.client.post(
        "/chat", json={"message": "where is my order?", "stream": stream}, headers=chatlens.headers
    )


async def test_a_stream_that_fails_after_its_200_is_a_failed_turn_and_an_sla_error(
    chatlens: Running,
) -> None:
    chatlens.use_model("ok")
    assert (await _chat(chatlens, stream=True)).status_code == 200
    chatlens.use_model("mid-error")  # a word, then the model's error event
    failed = await _chat(chatlens, stream=True)
    assert failed.status_code == 200
    assert [name for name, _ in parse_sse(failed.text)][-1] == "error"
    v1 = await chatlens.client.post(
        "/v1/chat/completions",
        json={
            "model": "mid-error",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers=chatlens.headers,
    )
    assert v1.status_code == 200
    assert '"error"' in v1.text

    turns = _turns(chatlens)
    assert turns[("answered", "true")] == 1
    assert turns[("failed_upstream", "true")] == 2
    assert sum(turns.values()) == 3
    # The SLA counts the two broken streams as failed requests, as it counts a 5xx.
    sla = await _sla(chatlens)
    assert sla["availability"]["errors"] == 2


async def test_outcomes_are_told_apart_streamed_or_not(chatlens: Running) -> None:
    chatlens.use_model("fail")  # 500s until the retries give up
    assert (await _chat(chatlens, stream=False)).status_code == 502
    chatlens.use_model("too-long")  # the upstream refuses the request itself
    assert (await _chat(chatlens, stream=False)).status_code == 400
    refused = await _chat(chatlens, stream=True)
    assert [name for name, _ in parse_sse(refused.text)][-1] == "error"
    chatlens.use_model("ok")
    assert (await _chat(chatlens, stream=False)).status_code == 200

    turns = _turns(chatlens)
    assert turns[("failed_upstream", "false")] == 1
    assert turns[("rejected", "false")] == 1
    assert turns[("rejected", "true")] == 1  # the client's request: not the service failing
    assert turns[("answered", "false")] == 1
    assert sum(turns.values()) == 4
    # One failure, the 502 itself: neither the refused stream nor a turn counted twice.
    assert (await _sla(chatlens))["availability"]["errors"] == 1
