"""Personal data and secrets are masked in every string field of every log line."""

from __future__ import annotations

import io
import re

import orjson
import pytest
import structlog

from chatlens.observability.logging import configure_logging
from chatlens.observability.redaction import redact


@pytest.mark.parametrize(
    ("text", "secret", "mask"),
    [
        ("write to jane.doe+vip@example.co.uk please", "jane.doe+vip@example.co.uk", "[email]"),
        ("call me on +7 (999) 123-45-67", "123-45-67", "[phone]"),
        ("my number is 8 800 555 35 35", "555 35 35", "[phone]"),
        ("card 4111 1111 1111 1111 was declined", "4111 1111 1111 1111", "[card]"),
        ("card 5500-0000-0000-0004", "5500-0000-0000-0004", "[card]"),
        ("pan 4000056655665556", "4000056655665556", "[card]"),
        ("key cl_" + "A" * 43, "cl_" + "A" * 43, "[secret]"),
        ("Authorization: Bearer sk-abcdef1234567890", "sk-abcdef1234567890", "[secret]"),
        ("password=hunter2hunter2", "hunter2hunter2", "[secret]"),
        # No digit, "@" or "cl_" anywhere: only the word itself says it is a secret.
        ("password=correcthorsebattery", "correcthorsebattery", "[secret]"),
        ("X-Api-Key: abcdefghijklmnop", "abcdefghijklmnop", "[secret]"),
    ],
)
def test_each_kind_is_masked(text: str, secret: str, mask: str) -> None:
    # Short strings' masked forms are remembered, long ones masked afresh: both, and twice.
    for value in (text, text, f"{text} {'.' * 300}", f"{'.' * 300} {text}"):
        masked = redact(value)
        assert secret not in masked
        assert mask in masked


@pytest.mark.parametrize(
    "text",
    [
        "order 12345 shipped",
        "2026-11-23T14:31:17.123Z",
        "1396b3be-da07-1234-5678-ef0f5c6dc4f1",
        "trace 4bf92f3577b34da6a3ce929d0e0e4736",
        "4111111111111112",  # not Luhn-valid: an order number, not a card
        "api_key_created",
    ],
)
def test_ids_dates_and_event_names_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_every_string_field_of_a_line_is_redacted() -> None:
    stream = io.BytesIO()
    options = {"level": "INFO", "fmt": "json", "service": "chatlens", "version": "t"}
    configure_logging(**options, environment="test", stream=stream)
    try:
        structlog.get_logger("chatlens.test.redaction").warning(
            "customer_wrote",
            note="reach me at bob@example.com",
            nested={"phone": "+44 20 7946 0958", "list": ["4111 1111 1111 1111"]},
        )
    finally:
        configure_logging(**options, environment="test")
    line = orjson.loads(stream.getvalue().splitlines()[-1])
    assert line["note"] == "reach me at [email]"
    assert line["nested"]["phone"] == "[phone]"
    assert line["nested"]["list"] == ["[card]"]
    assert line["level"] == "WARNING"


def test_request_fields_stay_with_their_request() -> None:
    """Fields bound in a task started from a request never reach the request's own lines."""
    import asyncio

    from chatlens.observability.logging import bind, context, start_request

    stream = io.BytesIO()
    options = {"level": "INFO", "fmt": "json", "service": "chatlens", "version": "t"}
    configure_logging(**options, environment="test", stream=stream)
    log = structlog.get_logger("chatlens.test.context")

    async def background() -> None:
        bind(conversation_id="from-the-task")
        log.info("in_task")

    async def request(request_id: str) -> None:
        start_request({"request_id": request_id})
        bind(user_id="u1")
        await asyncio.create_task(background())
        log.info("in_request")

    try:
        asyncio.run(request("r1"))
        asyncio.run(request("r2"))
        assert context() == {}
    finally:
        configure_logging(**options, environment="test")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(ln["event"], ln["request_id"], ln["user_id"]) for ln in lines] == [
        ("in_task", "r1", "u1"),
        ("in_request", "r1", "u1"),
        ("in_task", "r2", "u1"),
        ("in_request", "r2", "u1"),
    ]
    assert [ln.get("conversation_id") for ln in lines] == ["from-the-task", None] * 2
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ln["timestamp"]) for ln in lines
    )
