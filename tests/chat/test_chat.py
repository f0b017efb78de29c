"""POST /chat and the conversation message routes, JSON and SSE, with what they store."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatlens.models import Conversation, ConversationMetrics, Message
from tests.helpers import assert_documented_event, parse_sse

pytestmark = pytest.mark.asyncio


async def rows(maker: async_sessionmaker[AsyncSession], model: Any, **where: Any) -> list[Any]:
    async with maker() as session:
        query = select(model).filter_by(**where)
        if hasattr(model, "created_at"):
            query = query.order_by(model.created_at)
        return list((await session.scalars(query)).all())


async def test_chat_answers_from_the_knowledge_base_and_stores_the_turn(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any
) -> None:
    response = await client.post(
        "/chat",
        json={"message": "Where is my order?", "platform": "telegram", "user": "cust-42"},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["intent"] == "order_status"
    assert 0.35 <= body["confidence"] <= 1
    assert "order" in body["reply"].lower()
    assert body["escalated"] is False
    assert body["model"] == "builtin-kb"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] == 5  # Where, is, my, order, ?

    conversation_id = uuid.UUID(body["conversation_id"])
    [conversation] = await rows(sessionmaker, Conversation, id=conversation_id)
    assert conversation.title == "Where is my order?"
    assert conversation.platform == "telegram"
    assert conversation.external_user_id == "cust-42"
    assert conversation.first_response_at is not None
    assert conversation.first_response_at.tzinfo is not None
    question, answer = await rows(sessionmaker, Message, conversation_id=conversation_id)
    assert (question.role.value, question.content) == ("user", "Where is my order?")
    assert answer.id == uuid.UUID(body["message_id"])
    assert (answer.role.value, answer.status.value) == ("assistant", "complete")
    assert answer.content == body["reply"]
    assert (answer.intent, answer.confidence) == (body["intent"], body["confidence"])
    assert answer.completion_tokens == usage["completion_tokens"]
    assert answer.inference_time_ms is not None and answer.ttft_ms is not None
    assert answer.ttft_ms <= answer.inference_time_ms
    [metrics] = await rows(sessionmaker, ConversationMetrics, conversation_id=conversation_id)
    assert metrics.message_id == answer.id
    assert metrics.tokens_used == usage["total_tokens"]
    assert (metrics.platform, metrics.intent, metrics.escalated) == (
        "telegram",
        "order_status",
        False,
    )


async def test_a_conversation_continues_and_keeps_its_title(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any
) -> None:
    first = await client.post(
        "/chat",
        json={"message": "I want to change the delivery address on my order " * 3},
        headers=account.headers,
    )
    conversation_id = first.json()["conversation_id"]
    second = await client.post(
        "/chat",
        json={"message": "thanks a lot!", "conversation_id": conversation_id},
        headers=account.headers,
    )
    assert second.status_code == 200
    assert second.json()["conversation_id"] == conversation_id
    assert second.json()["intent"] == "thanks"
    # The model was shown the history: the prompt grew by the earlier turn.
    assert second.json()["usage"]["prompt_tokens"] > first.json()["usage"]["prompt_tokens"]
    [conversation] = await rows(sessionmaker, Conversation, id=uuid.UUID(conversation_id))
    assert conversation.title is not None
    assert conversation.title.startswith("I want to change the delivery address")
    assert len(conversation.title) <= 61 and conversation.title.endswith("…")
    assert len(await rows(sessionmaker, Message, conversation_id=conversation.id)) == 4


async def test_russian_question_gets_a_russian_answer(
    client: httpx.AsyncClient, account: Any
) -> None:
    response = await client.post(
        "/chat", json={"message": "где мой заказ?"}, headers=account.headers
    )
    body = response.json()
    assert body["intent"] == "order_status"
    assert any("а" <= ch <= "я" for ch in body["reply"].lower())


async def test_stream_sends_deltas_then_done_and_stores_the_same_text(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any
) -> None:
    response = await client.post(
        "/chat", json={"message": "how do I get a refund", "stream": True}, headers=account.headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    deltas = [data["content"] for name, data in events if name == "delta"]
    assert len(deltas) > 3  # word by word
    name, done = events[-1]
    assert name == "done"
    assert "".join(deltas) == done["reply"]
    assert done["intent"] == "refund"
    [answer] = await rows(sessionmaker, Message, id=uuid.UUID(done["message_id"]))
    assert answer.content == done["reply"]
    assert answer.status.value == "complete"


async def test_streamed_events_are_what_the_openapi_description_documents(
    client: httpx.AsyncClient, account: Any
) -> None:
    spec = (await client.get("/openapi.json")).json()
    response = await client.post(
        "/chat", json={"message": "where is my order", "stream": True}, headers=account.headers
    )
    events = parse_sse(response.text)
    assert {name for name, _ in events} == {"delta", "done"}
    for name, data in events:
        assert_documented_event(spec, "/chat", name, data)


async def test_accept_header_asks_for_a_stream(client: httpx.AsyncClient, account: Any) -> None:
    response = await client.post(
        "/chat",
        json={"message": "hello"},
        headers={**account.headers, "Accept": "text/event-stream"},
    )
    assert parse_sse(response.text)[-1][0] == "done"


async def test_low_confidence_hands_off_and_escalates(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any
) -> None:
    response = await client.post(
        "/chat", json={"message": "what is the capital of France"}, headers=account.headers
    )
    body = response.json()
    assert body["escalated"] is True
    assert body["confidence"] < 0.35
    assert body["intent"] == "unknown"
    [conversation] = await rows(sessionmaker, Conversation, id=uuid.UUID(body["conversation_id"]))
    assert conversation.status.value == "escalated"
    assert conversation.escalation_reason == "low_confidence"
    assert conversation.escalated_at is not None
    [metrics] = await rows(
        sessionmaker, ConversationMetrics, message_id=uuid.UUID(body["message_id"])
    )
    assert metrics.escalated is True


async def test_asking_for_a_human_escalates_as_a_user_request(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any
) -> None:
    response = await client.post(
        "/chat", json={"message": "I want to talk to a human operator"}, headers=account.headers
    )
    body = response.json()
    assert (body["intent"], body["escalated"]) == ("talk_to_human", True)
    [conversation] = await rows(sessionmaker, Conversation, id=uuid.UUID(body["conversation_id"]))
    assert conversation.escalation_reason == "user_request"


async def test_message_route_streams_by_default_and_json_on_request(
    client: httpx.AsyncClient, account: Any
) -> None:
    created = await client.post(
        "/api/conversations", json={"project_id": "shop-eu"}, headers=account.headers
    )
    assert created.status_code == 201
    conversation_id = created.json()["id"]
    assert created.json()["title"] is None
    streamed = await client.post(
        f"/api/conversations/{conversation_id}/messages",
        json={"message": "my card payment failed"},
        headers=account.headers,
    )
    assert parse_sse(streamed.text)[-1][1]["intent"] == "payment_failed"
    plain = await client.post(
        f"/api/conversations/{conversation_id}/messages",
        json={"message": "my card payment failed", "stream": False},
        headers=account.headers,
    )
    assert plain.headers["content-type"].startswith("application/json")
    assert plain.json()["conversation_id"] == conversation_id
    conversation = (
        await client.get(f"/api/conversations/{conversation_id}", headers=account.headers)
    ).json()
    assert conversation["title"] == "my card payment failed"
    assert conversation["project_id"] == "shop-eu"


async def test_regenerate_replaces_the_last_answer(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any
) -> None:
    first = (
        await client.post("/chat", json={"message": "reset my password"}, headers=account.headers)
    ).json()
    conversation_id = first["conversation_id"]
    response = await client.post(
        f"/api/conversations/{conversation_id}/regenerate", headers=account.headers
    )
    events = parse_sse(response.text)
    name, done = events[-1]
    assert name == "done"
    assert done["message_id"] != first["message_id"]
    assert done["intent"] == "reset_password"
    messages = await rows(sessionmaker, Message, conversation_id=uuid.UUID(conversation_id))
    assert [m.role.value for m in messages] == ["user", "assistant"]
    assert messages[1].id == uuid.UUID(done["message_id"])
    # The fact table keeps both turns: it is append-only.
    metrics = await rows(
        sessionmaker, ConversationMetrics, conversation_id=uuid.UUID(conversation_id)
    )
    assert len(metrics) == 2


async def test_regenerate_without_a_question_is_a_conflict(
    client: httpx.AsyncClient, account: Any
) -> None:
    conversation_id = (await client.post("/api/conversations", headers=account.headers)).json()[
        "id"
    ]
    response = await client.post(
        f"/api/conversations/{conversation_id}/regenerate",
        json={"stream": False},
        headers=account.headers,
    )
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "conflict"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   \n "}, "message"),
        ({"message": "x" * 8001}, "message"),
        ({"message": "hi", "project_id": "Bad Project!"}, "project_id"),
        ({"message": "hi", "platform": "fax"}, "platform"),
        ({"message": "hi", "conversation_id": "not-a-uuid"}, "conversation_id"),
        ({"message": "hi", "user": "u" * 129}, "user"),
    ],
)
async def test_invalid_chat_input_is_a_422_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any, payload: Any, field: str
) -> None:
    response = await client.post("/chat", json=payload, headers=account.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert error["message"].startswith(field)
    assert error["request_id"] == response.headers["x-request-id"]
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0


async def test_unknown_conversation_is_404(client: httpx.AsyncClient, account: Any) -> None:
    response = await client.post(
        "/chat",
        json={"message": "hi", "conversation_id": str(uuid.uuid4())},
        headers=account.headers,
    )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


async def test_body_over_64_kib_is_413_before_parsing(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any
) -> None:
    body = b'{"message": "' + b"a" * (64 * 1024) + b'"}'
    response = await client.post(
        "/chat", content=body, headers={**account.headers, "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"
    assert response.headers["x-request-id"] == response.json()["error"]["request_id"]

    async def chunked() -> Any:
        for _ in range(70):
            yield b"a" * 1024

    response = await client.post(
        "/chat", content=chunked(), headers={**account.headers, "content-type": "application/json"}
    )
    assert response.status_code == 413
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Conversation)) == 0
