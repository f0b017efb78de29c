"""Ratings, CSAT/NPS, intent labels, escalation and resolution: stored, validated, counted."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chatlens import state
from chatlens.analytics.service import CriticalWords
from chatlens.models import Feedback
from chatlens.observability.deps import Telemetry

pytestmark = pytest.mark.asyncio


def metric(app: Any, name: str, **labels: str) -> float:
    return float(
        state.of(app).get(Telemetry).metrics.registry.get_sample_value(name, labels) or 0.0
    )


async def ask(client: httpx.AsyncClient, account: Any, text: str = "where is my order?") -> Any:
    response = await client.post("/chat", json={"message": text}, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_rating_an_answer_keeps_its_trace_and_a_second_replaces_it(
    app: Any, client: httpx.AsyncClient, account: Any, sessionmaker: Any
) -> None:
    turn = await ask(client, account)
    url = f"/api/messages/{turn['message_id']}/feedback"
    downs = metric(app, "feedback_total", kind="rating", value="down")
    first = await client.post(url, json={"rating": "down"}, headers=account.headers)
    assert first.status_code == 201, first.text
    second = await client.post(
        url, json={"rating": "up", "comment": "ok now"}, headers=account.headers
    )
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["score"] == 1
    assert metric(app, "feedback_total", kind="rating", value="down") == downs + 1
    async with sessionmaker() as session:
        rows = (await session.scalars(select(Feedback))).all()
    assert len(rows) == 1
    messages = (
        await client.get(
            f"/api/conversations/{turn['conversation_id']}/messages", headers=account.headers
        )
    ).json()["items"]
    assert rows[0].trace_id == messages[1]["trace_id"] is not None


async def test_csat_and_nps_are_one_per_conversation_and_validated(
    app: Any, client: httpx.AsyncClient, account: Any
) -> None:
    turn = await ask(client, account)
    base = f"/api/conversations/{turn['conversation_id']}"
    fives = metric(app, "satisfaction_score_bucket", le="5.0")
    assert (
        await client.post(f"{base}/csat", json={"score": 5}, headers=account.headers)
    ).status_code == 201
    assert (
        await client.post(f"{base}/csat", json={"score": 4}, headers=account.headers)
    ).status_code == 200
    assert (
        await client.post(f"{base}/nps", json={"score": 9}, headers=account.headers)
    ).status_code == 201
    for bad in ({"score": 0}, {"score": 6}, {"score": "five"}, {}):
        response = await client.post(f"{base}/csat", json=bad, headers=account.headers)
        assert response.status_code == 422
    bad_nps = await client.post(f"{base}/nps", json={"score": 11}, headers=account.headers)
    assert bad_nps.status_code == 422
    assert metric(app, "satisfaction_score_bucket", le="5.0") == fives + 2
    assert metric(app, "feedback_total", kind="nps", value="9") >= 1


async def test_someone_elses_conversation_or_message_is_404(
    client: httpx.AsyncClient, account: Any, make_account: Any
) -> None:
    turn = await ask(client, account)
    stranger = await make_account()
    csat = await client.post(
        f"/api/conversations/{turn['conversation_id']}/csat",
        json={"score": 1},
        headers=stranger.headers,
    )
    assert csat.status_code == 404
    rating = await client.post(
        f"/api/messages/{turn['message_id']}/feedback",
        json={"rating": "down"},
        headers=stranger.headers,
    )
    assert rating.status_code == 404


async def test_a_critical_comment_is_counted(
    app: Any, client: httpx.AsyncClient, account: Any
) -> None:
    turn = await ask(client, account)
    base = f"/api/conversations/{turn['conversation_id']}"
    before = metric(app, "negative_feedback_total", kind="csat")
    harmless = await client.post(
        f"{base}/nps",
        json={"score": 3, "comment": "the boat (судно) was late"},
        headers=account.headers,
    )
    assert harmless.json()["critical"] is False
    flagged = await client.post(
        f"{base}/csat",
        json={"score": 1, "comment": "Это мошенники, пойду в СУД"},
        headers=account.headers,
    )
    assert flagged.json()["critical"] is True
    assert metric(app, "negative_feedback_total", kind="csat") == before + 1


async def test_critical_words_are_whole_words_in_any_case() -> None:
    words = CriticalWords(["fraud", "суд", "lawyer"])
    assert words.found_in("This is FRAUD!")
    assert words.found_in("my lawyer will call")
    assert words.found_in("подам в суд")
    assert not words.found_in("судно пришло")
    assert not words.found_in("defrauded?")  # not the whole word
    assert not words.found_in(None)


async def test_intent_labels_are_for_admins_and_known_intents(
    app: Any, client: httpx.AsyncClient, account: Any, admin: Any, sessionmaker: Any
) -> None:
    turn = await ask(client, account)
    assert turn["intent"] == "order_status"
    url = f"/api/messages/{turn['message_id']}/intent"
    wrong = metric(app, "intent_labels_total", intent="order_status", correct="false")
    right = metric(app, "intent_labels_total", intent="order_status", correct="true")
    forbidden = await client.put(url, json={"intent": "refund"}, headers=account.headers)
    assert forbidden.status_code == 403
    unknown = await client.put(url, json={"intent": "teleport"}, headers=admin.headers)
    assert unknown.status_code == 422
    assert "order_status" in unknown.json()["error"]["message"]  # lists the valid ones
    labeled = await client.put(url, json={"intent": "refund"}, headers=admin.headers)
    assert labeled.status_code == 200
    assert labeled.json() == {
        "message_id": turn["message_id"],
        "intent": turn["intent"],
        "labeled_intent": "refund",
        "correct": False,
    }
    assert metric(app, "intent_labels_total", intent="order_status", correct="false") == wrong + 1
    relabeled = await client.put(url, json={"intent": "order_status"}, headers=admin.headers)
    assert relabeled.json()["correct"] is True
    assert metric(app, "intent_labels_total", intent="order_status", correct="true") == right + 1


async def test_escalate_and_resolve_follow_the_allowed_transitions(
    app: Any, client: httpx.AsyncClient, account: Any
) -> None:
    turn = await ask(client, account, "how long does delivery take?")
    base = f"/api/conversations/{turn['conversation_id']}"
    resolved_before = metric(
        app, "conversations_resolved_total", outcome="converted", platform="web"
    )
    escalated = await client.post(
        f"{base}/escalate", json={"reason": "vip"}, headers=account.headers
    )
    assert escalated.status_code == 200
    assert escalated.json()["status"] == "escalated"
    assert escalated.json()["escalation_reason"] == "vip"
    again = await client.post(f"{base}/escalate", headers=account.headers)
    assert again.status_code == 409
    done = await client.post(
        f"{base}/resolve", json={"outcome": "converted"}, headers=account.headers
    )
    assert done.status_code == 200
    assert done.json()["status"] == "resolved"
    assert done.json()["outcome"] == "converted"
    assert done.json()["resolved_at"] is not None
    twice = await client.post(
        f"{base}/resolve", json={"outcome": "resolved"}, headers=account.headers
    )
    assert twice.status_code == 409
    assert twice.json()["error"]["type"] == "conflict"
    bad = await client.post(f"{base}/resolve", json={"outcome": "closed"}, headers=account.headers)
    assert bad.status_code == 422
    assert (
        metric(app, "conversations_resolved_total", outcome="converted", platform="web")
        == resolved_before + 1
    )
    assert metric(app, "escalations_total", platform="web", reason="vip") >= 1
    assert metric(app, "conversation_resolution_seconds_count") >= 1


async def test_csat_and_resolution_reach_every_turn_row_of_the_conversation(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any
) -> None:
    """conversation_metrics (what exports and column stores get) carries each conversation's
    latest CSAT and whether it was resolved; other conversations keep theirs."""
    from chatlens.models import ConversationMetrics

    first = await ask(client, account)
    await client.post(
        "/chat",
        json={"message": "and a refund?", "conversation_id": first["conversation_id"]},
        headers=account.headers,
    )
    other = await ask(client, account, "how long does delivery take?")
    base = f"/api/conversations/{first['conversation_id']}"
    for score in (4, 2):  # the second replaces the first
        given = await client.post(f"{base}/csat", json={"score": score}, headers=account.headers)
        assert given.status_code in (200, 201)
    closed = await client.post(
        f"{base}/resolve", json={"outcome": "converted"}, headers=account.headers
    )
    assert closed.status_code == 200
    abandoned = await client.post(
        f"/api/conversations/{other['conversation_id']}/resolve",
        json={"outcome": "abandoned"},
        headers=account.headers,
    )
    assert abandoned.status_code == 200

    async with sessionmaker() as session:
        rows = (await session.scalars(select(ConversationMetrics))).all()
    by_conversation: dict[str, list[Any]] = {}
    for row in rows:
        by_conversation.setdefault(str(row.conversation_id), []).append(row)
    mine = by_conversation[first["conversation_id"]]
    assert len(mine) == 2
    assert {(row.satisfaction_score, row.resolved) for row in mine} == {(2, True)}
    [theirs] = by_conversation[other["conversation_id"]]
    assert (theirs.satisfaction_score, theirs.resolved) == (None, False)
