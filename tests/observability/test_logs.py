"""Every line a real server prints is one JSON object with the required fields."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.helpers import Server

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
REQUIRED = ("timestamp", "level", "event", "logger", "service", "version", "environment")
IN_REQUEST = ("request_id", "trace_id", "span_id", "method", "route")


def test_every_line_of_a_real_server_is_json_with_the_required_fields(
    tmp_path: Path, env_without_chatlens: dict[str, str]
) -> None:
    env = {
        **env_without_chatlens,
        "LOG_LEVEL": "DEBUG",
        "CHATLENS_DATABASE_ECHO": "true",
        "CHATLENS_ENVIRONMENT": "staging",
    }
    server = Server(tmp_path, env)
    try:
        key_match = KEY.search(server.output)
        assert key_match is not None
        key = key_match.group()
        headers = {"Authorization": f"Bearer {key}", "X-Request-ID": "req-logs-1"}
        answer = httpx.post(
            f"{server.url}/chat",
            json={"message": "Where is my order? I'm jane@example.com, +1 415 555 0100"},
            headers=headers,
            timeout=10,
        )
        assert answer.status_code == 200
        trace_id = answer.headers["x-trace-id"]
        httpx.get(f"{server.url}/nope")
        httpx.get(f"{server.url}/metrics")
        httpx.post(
            f"{server.url}/chat", json={"message": "x"}, headers={"Authorization": "Bearer no"}
        )
    finally:
        server.stop()

    records: list[dict[str, Any]] = []
    for number, line in enumerate(server.lines(), 1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(record, dict)
        for field in REQUIRED:
            assert field in record, (field, record)
        assert TIMESTAMP.fullmatch(record["timestamp"]), record["timestamp"]
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        assert (record["service"], record["environment"]) == ("chatlens", "staging")
        records.append(record)

    loggers = {r["logger"] for r in records}
    assert "uvicorn.error" in loggers
    assert any(name.startswith("sqlalchemy.engine") for name in loggers)
    assert any(name.startswith("alembic") for name in loggers)

    chat_lines = [r for r in records if r.get("request_id") == "req-logs-1"]
    assert chat_lines, "no line carries the request id"
    for record in chat_lines:
        for field in IN_REQUEST:
            assert field in record, (field, record)
        assert record["trace_id"] == trace_id
        assert re.fullmatch(r"[0-9a-f]{16}", record["span_id"])
        assert record["route"] == "/chat"
    [access] = [r for r in chat_lines if r["event"] == "http_request"]
    assert access["status"] == 200
    assert access["path"] == "/chat"
    assert access["duration_ms"] > 0
    assert access["client_ip"] == "127.0.0.1"
    assert access["user_agent"].startswith("python-httpx")
    assert access["user_id"]  # known once the key was checked
    [processed] = [r for r in chat_lines if r["event"] == "message_processed"]
    for field in (
        "user_id",
        "conversation_id",
        "session_id",
        "platform",
        "intent",
        "confidence",
        "response_time_ms",
        "ttft_ms",
        "ai_tokens_used",
        "cost_usd",
        "ai_model",
        "project_id",
        "escalated",
    ):
        assert field in processed, field
    assert processed["intent"] == "order_status"
    assert processed["session_id"] == processed["conversation_id"]

    # Health and /metrics are DEBUG; the rest INFO.
    levels = {r["path"]: r["level"] for r in records if r["event"] == "http_request"}
    assert levels["/metrics"] == "DEBUG"
    assert levels["/nope"] == "INFO"
    [unmatched] = [r for r in records if r["event"] == "http_request" and r["path"] == "/nope"]
    assert unmatched["route"] == "__unmatched__"

    # The customer's e-mail and phone never reach the log, in SQL parameters or anywhere else.
    text = server.stdout.read_text()
    assert "jane@example.com" not in text
    assert "415 555 0100" not in text
    assert key not in text


def test_message_text_is_logged_only_when_asked_and_then_redacted(
    tmp_path: Path, env_without_chatlens: dict[str, str]
) -> None:
    question = "Where is my order? mail jane@example.com"
    for enabled in ("false", "true"):
        workdir = tmp_path / enabled
        workdir.mkdir()
        env = {**env_without_chatlens, "CHATLENS_LOG_MESSAGE_CONTENT": enabled}
        server = Server(workdir, env)
        try:
            key_match = KEY.search(server.output)
            assert key_match is not None
            httpx.post(
                f"{server.url}/chat",
                json={"message": question},
                headers={"Authorization": f"Bearer {key_match.group()}"},
                timeout=10,
            )
        finally:
            server.stop()
        [processed] = [
            orjson.loads(line) for line in server.lines() if '"message_processed"' in line
        ]
        if enabled == "true":
            assert processed["question"] == "Where is my order? mail [email]"
            assert processed["reply"]
        else:
            assert "question" not in processed
            assert "reply" not in processed
            assert "Where is my order" not in server.stdout.read_text()
