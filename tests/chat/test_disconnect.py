"""A client that leaves mid-stream still leaves the answer stored."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from chatlens import state
from chatlens.app import create_app
from chatlens.models import ConversationMetrics, Message, MessageRole
from chatlens.observability.deps import Telemetry
from chatlens.settings import Settings
from tests.helpers import make_settings

pytestmark = pytest.mark.asyncio


def post_scope(path: str, key: str) -> dict[str, Any]:
    """The ASGI scope of a JSON POST to `path` with the API key `key`."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"chatlens.test"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {key}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("chatlens.test", 80),
    }


async def post_and_disconnect_after_first_delta(
    app: Any, path: str, payload: dict[str, Any], key: str
) -> list[bytes]:
    """Drive the ASGI app like a client that hangs up once the first delta arrives."""
    request_sent = False
    hang_up = asyncio.Event()
    received: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": orjson.dumps(payload), "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            received.append(message["body"])
            if b"event: delta" in message["body"]:
                hang_up.set()

    await asyncio.wait_for(app(post_scope(path, key), receive, send), timeout=10)
    return received


async def test_disconnect_after_first_delta_stores_an_incomplete_answer(
    settings: Settings, account: Any, sessionmaker: Any
) -> None:
    # A slow stream (30 ms a word) so the client is gone long before the model finishes.
    slow = create_app(make_settings(settings.database_url, builtin_stream_delay_ms=30))
    async with slow.router.lifespan_context(slow):
        received = await post_and_disconnect_after_first_delta(
            slow, "/chat", {"message": "how can I get a refund", "stream": True}, account.key
        )
    assert any(b"event: delta" in chunk for chunk in received)
    assert not any(b"event: done" in chunk for chunk in received)

    async with sessionmaker() as session:
        messages = (await session.scalars(select(Message).order_by(Message.created_at))).all()
        assert [m.role for m in messages] == [MessageRole.user, MessageRole.assistant]
        answer = messages[1]
        assert answer.status.value == "incomplete"
        assert answer.content  # what was streamed before the client left
        assert answer.completion_tokens and answer.completion_tokens > 0
        metrics = (await session.scalars(select(ConversationMetrics))).all()
        assert [m.message_id for m in metrics] == [answer.id]
        assert metrics[0].status == "incomplete"


async def test_disconnect_on_the_message_route_keeps_the_question_and_the_partial_answer(
    settings: Settings, account: Any, sessionmaker: Any, client: Any
) -> None:
    conversation_id = uuid.UUID(
        (await client.post("/api/conversations", headers=account.headers)).json()["id"]
    )
    slow = create_app(make_settings(settings.database_url, builtin_stream_delay_ms=30))
    async with slow.router.lifespan_context(slow):
        await post_and_disconnect_after_first_delta(
            slow,
            f"/api/conversations/{conversation_id}/messages",
            {"message": "где мой заказ"},
            account.key,
        )
    async with sessionmaker() as session:
        query = select(Message).where(Message.conversation_id == conversation_id)
        messages = (await session.scalars(query.order_by(Message.created_at))).all()
    assert [(m.role.value, m.status.value) for m in messages] == [
        ("user", "complete"),
        ("assistant", "incomplete"),
    ]
    assert messages[0].content == "где мой заказ"


@pytest.mark.parametrize("path", ["/chat", "/v1/chat/completions"])
async def test_a_send_that_fails_mid_stream_stores_the_answer_before_the_request_ends(
    settings: Settings, account: Any, sessionmaker: Any, path: str
) -> None:
    # A broken pipe on the second write: the server's own send fails, nothing is received.
    question = "how can I get a refund"
    payload: dict[str, Any] = (
        {"message": question, "stream": True}
        if path == "/chat"
        else {"model": "builtin-kb", "messages": [{"role": "user", "content": question}]}
        | {"stream": True}
    )
    slow = create_app(make_settings(settings.database_url, builtin_stream_delay_ms=30))
    writes = 0
    requested = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": orjson.dumps(payload), "more_body": False}
        await never.wait()  # the client stays: only the server's send fails
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal writes
        if message["type"] == "http.response.body" and message.get("body"):
            writes += 1
            if writes >= 2:
                raise OSError("broken pipe")

    # No garbage collection while the request runs: what is stored and counted when it
    # returns was done by the request itself, not by a generator's finaliser later.
    gc.disable()
    try:
        async with slow.router.lifespan_context(slow):
            metrics = state.of(slow).get(Telemetry).metrics
            assert metrics is not None
            with contextlib.suppress(OSError):
                await asyncio.wait_for(
                    slow(post_scope(path, account.key), receive, send), timeout=10
                )
            assert metrics.registry.get_sample_value("sse_streams_active") == 0
            async with sessionmaker() as session:
                stored = (await session.scalars(select(Message.role))).all()
            assert sorted(role.value for role in stored) == ["assistant", "user"]
    finally:
        gc.enable()
