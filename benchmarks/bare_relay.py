"""The floors of the relay benchmark: a relay that does nothing but relay, and one that also
stores its turns.

A bare ASGI app under uvicorn (as `chatlens serve` runs it) that passes
`/v1/chat/completions` to the upstream through the HTTP stack the `openai` backend uses
(one httpx.AsyncClient over httpx-aiohttp's transport, requests sent straight to the
transport) and sends back what comes, streamed or not. No authentication, storage, logs,
metrics or traces: what it serves is as much as any relay on this stack can, on this
machine, and chatlens's figure is read against it.

With `--store DB` (a SQLite database migrated by chatlens's migrations, with one user), it
also stores each turn as chatlens does, and nothing else: the conversation and the question
committed before the upstream is asked, the answer, its conversation_metrics row and the
conversation's update after. It writes with sqlite3 on the event loop's own thread (no
ORM, no thread switch), the writes of one pass of the loop in one transaction: the cheapest
way these benchmarks know to keep a turn in this database.

    python -m benchmarks.bare_relay --port 9001 --upstream http://127.0.0.1:9000/v1 [--store DB]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from httpx_aiohttp import AiohttpTransport

from benchmarks.fake_upstream import MODEL, read_body

_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}

_CONVERSATION = (
    "INSERT INTO conversations (id, user_id, project_id, platform, title, status, created_at,"
    " updated_at) VALUES (?, ?, 'default', 'api', ?, 'open', ?, ?)"
)
_QUESTION = (
    "INSERT INTO messages (id, conversation_id, role, content, created_at, project_id, status)"
    " VALUES (?, ?, 'user', ?, ?, 'default', 'complete')"
)
_TOUCH = (
    "UPDATE conversations SET updated_at = ?, first_response_at = coalesce(first_response_at, ?)"
    " WHERE id = ?"
)
_ANSWER = (
    "INSERT INTO messages (id, conversation_id, role, content, created_at, project_id, model,"
    " prompt_tokens, completion_tokens, inference_time_ms, status)"
    " VALUES (?, ?, 'assistant', ?, ?, 'default', ?, ?, ?, ?, 'complete')"
)
_FACTS = (
    "INSERT INTO conversation_metrics (id, timestamp, conversation_id, message_id, user_id,"
    " project_id, platform, model, response_time_ms, prompt_tokens, completion_tokens,"
    " tokens_used, cost_usd, resolved, escalated, status)"
    " VALUES (?, ?, ?, ?, ?, 'default', 'api', ?, ?, ?, ?, ?, 0, 0, 0, 'complete')"
)

Statement = tuple[str, tuple[Any, ...]]


@dataclass(slots=True)
class _Turn:
    """A stored question, waiting for its answer."""

    conversation_id: str
    asked: float = field(default_factory=time.perf_counter)  # after the question's commit
    received: list[bytes] = field(default_factory=list)  # the upstream's reply as it came


class TurnStore:
    """A turn's rows in SQLite, the writes queued in one pass of the loop committed together."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            self._db.execute(f"PRAGMA {pragma}")
        row = self._db.execute("SELECT id FROM users LIMIT 1").fetchone()
        if row is None:
            raise SystemExit(f"{path}: no user to own the conversations")
        self.user_id: str = row[0]
        self._queued: list[tuple[list[Statement], asyncio.Future[None]]] = []

    async def question(self, body: bytes) -> _Turn:
        """Store a new conversation with the request's last message."""
        conversation_id = uuid.uuid4().hex
        text = orjson.loads(body)["messages"][-1]["content"]
        now = _now()
        await self._write(
            [
                (_CONVERSATION, (conversation_id, self.user_id, text[:60], now, now)),
                (_QUESTION, (uuid.uuid4().hex, conversation_id, text, now)),
            ]
        )
        return _Turn(conversation_id)

    async def answer(self, turn: _Turn) -> None:
        """Store the answer, its conversation_metrics row, and the conversation's update."""
        took_ms = (time.perf_counter() - turn.asked) * 1000
        text, prompt, completion = _answer_of(b"".join(turn.received))
        answer_id, now, conversation_id = uuid.uuid4().hex, _now(), turn.conversation_id
        answer = (answer_id, conversation_id, text, now, MODEL, prompt, completion, took_ms)
        facts = (uuid.uuid4().hex, now, conversation_id, answer_id, self.user_id, MODEL)
        tokens = (took_ms, prompt, completion, prompt + completion)
        await self._write(
            [
                (_TOUCH, (now, now, conversation_id)),
                (_ANSWER, answer),
                (_FACTS, facts + tokens),
            ]
        )

    async def _write(self, statements: list[Statement]) -> None:
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._commit)
        done = loop.create_future()
        self._queued.append((statements, done))
        await done

    def _commit(self) -> None:
        queued, self._queued = self._queued, []
        try:
            self._db.execute("BEGIN")
            for statements, _ in queued:
                for sql, parameters in statements:
                    self._db.execute(sql, parameters)
            self._db.execute("COMMIT")
        except Exception as exc:  # the whole group fails: a floor retries nothing
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            for _, done in queued:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in queued:
            if not done.done():  # a request cancelled meanwhile
                done.set_result(None)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _answer_of(body: bytes) -> tuple[str, int, int]:
    """The text and token counts of a non-streamed completion; a stream is kept as it came."""
    try:
        completion = orjson.loads(body)
        usage = completion["usage"]
        return (
            completion["choices"][0]["message"]["content"],
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return body.decode(errors="replace"), 0, 0


def make_app(upstream: str, store: TurnStore | None = None) -> Any:
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=200))
    client = httpx.AsyncClient(transport=transport)
    url = httpx.URL(upstream.rstrip("/") + "/chat/completions")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = await read_body(receive)
        turn = await store.question(body) if store is not None else None
        request = httpx.Request("POST", url, content=body, headers=_HEADERS)
        response = await transport.handle_async_request(request)
        content_type = response.headers.get("content-type", "application/json").encode()
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(b"content-type", content_type)],
            }
        )
        try:
            async for chunk in response.aiter_raw():
                if turn is not None:
                    turn.received.append(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await response.aclose()
        if store is not None and turn is not None:
            await store.answer(turn)
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--store", type=Path, help="a migrated SQLite database to store turns in")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.upstream, TurnStore(args.store) if args.store else None),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
