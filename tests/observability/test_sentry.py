"""Errors reach Sentry through the real SDK, tagged with the request and without personal data."""

from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import sentry_sdk
import structlog
from fastapi import APIRouter

from chatlens import __version__
from chatlens.app import create_app
from chatlens.auth.deps import CurrentUser
from chatlens.settings import Settings
from tests.helpers import Server, make_settings
from tests.sentry_receiver import Receiver

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
KEY = "cl_" + "Zq7" * 15
PHONE = "+1 415 555 0100"
# Not one of these, in any form, may leave the process.
CLIENT_IP = "203.0.113.77"
# What a proxy in front of chatlens adds: the customer's address, the page they came from.
PROXY_HEADERS = {
    "X-Forwarded-For": f"{CLIENT_IP}, 10.0.0.1",
    "X-Real-IP": CLIENT_IP,
    "Forwarded": f"for={CLIENT_IP};proto=https",
    "Referer": "https://shop.example.com/orders/8812?customer=jane",
}
PERSONAL = (
    *(EMAIL, "jane.doe", CARD, CARD.replace(" ", ""), KEY, "Zq7Zq7Zq7", PHONE, "555 0100"),
    *(CLIENT_IP, "shop.example.com", "customer=jane"),
)
HEX32 = re.compile(r"[0-9a-f]{32}")
KEY_PATTERN = re.compile(r"cl_[A-Za-z0-9_-]{43}")


class CardDeclined(RuntimeError):
    """The failure of the test route; its message carries a customer's data."""


def _test_routes() -> APIRouter:
    router = APIRouter()

    @router.post("/test/charge")
    async def charge(payload: dict[str, str], user: CurrentUser) -> Any:
        raise CardDeclined(f"card {CARD} of {EMAIL} declined, key {KEY}")

    @router.post("/test/charge-logged")
    async def charge_logged(user: CurrentUser) -> Any:
        try:
            raise CardDeclined(f"card {CARD} declined")
        except CardDeclined:
            structlog.get_logger("chatlens.test.sentry").error("charge_failed", exc_info=True)
            raise

    @router.get("/test/log")
    async def log_lines(user: CurrentUser) -> dict[str, bool]:
        log = structlog.get_logger("chatlens.test.sentry")
        log.warning("something_odd", detail=f"mail {EMAIL}")
        log.error("something_failed", detail=f"mail {EMAIL}")
        logging.getLogger("chatlens.test.stdlib").error("stdlib line for %s", EMAIL)
        try:
            raise ValueError(f"no account for {EMAIL}")
        except ValueError as exc:
            caught = exc
        # Logged after the `except` block: only structlog's rendering of it is left.
        log.error("lookup_failed", exc_info=caught)
        return {"ok": True}

    return router


@asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    app.include_router(_test_routes())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def _assert_no_personal_data(receiver: Receiver) -> None:
    assert receiver.bodies
    for body in receiver.bodies:
        text = body.decode()
        for value in PERSONAL:
            assert value not in text, (value, text)


async def test_an_unhandled_exception_is_one_tagged_event_without_personal_data(
    settings: Settings, make_account: Any, receiver: Receiver
) -> None:
    account = await make_account()
    headers = {**account.headers, **PROXY_HEADERS, "X-Request-ID": "req-sentry-1"}
    async with _serving(make_settings(settings.database_url, sentry_dsn=receiver.dsn)) as client:
        response = await client.post(
            "/test/charge", json={"note": f"call me on {PHONE}"}, headers=headers
        )

    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "type": "internal_error",
            "message": "internal server error",
            "request_id": "req-sentry-1",
        }
    }
    trace_id = response.headers["x-trace-id"]
    assert HEX32.fullmatch(trace_id)

    events = receiver.events(1)
    assert len(events) == 1, events  # the log line is the only path: no second report
    event = events[0]
    assert event["tags"]["request_id"] == "req-sentry-1"
    assert event["tags"]["trace_id"] == trace_id
    assert event["user"] == {"id": str(account.id)}
    assert event["level"] == "error"
    assert event["logentry"]["message"] == "unhandled_exception"
    assert event["release"] == __version__
    assert event["environment"] == "test"
    error = event["exception"]["values"][-1]
    assert error["type"] == "CardDeclined"
    assert error["value"] == "card [card] of [email] declined, key [secret]"
    frames = error["stacktrace"]["frames"]
    [raised] = [frame for frame in frames if frame["function"] == "charge"]
    # The exception object itself was reported, not its rendering: module and source known.
    assert raised["module"] == __name__
    assert "raise CardDeclined" in raised["context_line"]
    assert all("vars" not in frame for frame in frames)
    assert not event.get("request", {}).get("data")
    # Headers by allow list: what a proxy adds about the customer never leaves.
    # (The SDK's allow list matches parts of names: "accept" lets Accept-Encoding through.)
    allowed = ("accept", "content-type", "content-length", "user-agent", "x-request-id")
    sent = event["request"]["headers"]
    kept = {k: v for k, v in sent.items() if not any(a in k.lower() for a in allowed)}
    assert set(kept.values()) == {"[Filtered]"}, kept
    assert sent["x-request-id"] == "req-sentry-1"
    _assert_no_personal_data(receiver)


async def test_a_failure_logged_twice_is_reported_once(
    settings: Settings, make_account: Any, receiver: Receiver
) -> None:
    account = await make_account()
    async with _serving(make_settings(settings.database_url, sentry_dsn=receiver.dsn)) as client:
        response = await client.post("/test/charge-logged", headers=account.headers)
    assert response.status_code == 500
    # The route's line and the middleware's `unhandled_exception` carry the same exception.
    events = receiver.events(1)
    assert [event["logentry"]["message"] for event in events] == ["charge_failed"]
    _assert_no_personal_data(receiver)


async def test_error_lines_are_events_and_warnings_are_not(
    settings: Settings, make_account: Any, receiver: Receiver
) -> None:
    account = await make_account()
    headers = {**account.headers, "X-Request-ID": "req-sentry-2"}
    async with _serving(make_settings(settings.database_url, sentry_dsn=receiver.dsn)) as client:
        response = await client.get("/test/log", headers=headers)
    assert response.status_code == 200

    events = receiver.events(3)
    by_message = {event["logentry"]["message"]: event for event in events}
    # One event per ERROR line, structlog's and the standard library's; none for WARNING.
    assert sorted(by_message) == ["lookup_failed", "something_failed", "stdlib line for [email]"]
    assert len(events) == 3
    failed = by_message["something_failed"]
    assert "exception" not in failed
    assert failed["level"] == "error"
    assert failed["logger"] == "chatlens.test.sentry"
    assert failed["contexts"]["log"]["detail"] == "mail [email]"
    lookup = by_message["lookup_failed"]["exception"]["values"][-1]
    assert (lookup["type"], lookup["value"]) == ("ValueError", "no account for [email]")
    assert any(frame["function"] == "log_lines" for frame in lookup["stacktrace"]["frames"])
    for event in events:
        assert event["tags"]["request_id"] == "req-sentry-2"
        assert event["tags"]["trace_id"] == response.headers["x-trace-id"]
        assert event["user"] == {"id": str(account.id)}
    _assert_no_personal_data(receiver)


async def test_without_a_dsn_nothing_is_sent_and_errors_are_still_answered(
    settings: Settings, make_account: Any, receiver: Receiver
) -> None:
    account = await make_account()
    create_app(make_settings(settings.database_url, sentry_dsn=receiver.dsn))
    assert sentry_sdk.get_client().is_active()
    # The next app of the process has no DSN: it turns Sentry off for the whole process.
    async with _serving(make_settings(settings.database_url)) as client:
        assert not sentry_sdk.get_client().is_active()
        failed = await client.post("/test/charge", json={}, headers=account.headers)
        logged = await client.get("/test/log", headers=account.headers)
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "internal_error"
    assert logged.status_code == 200
    sentry_sdk.flush(timeout=2)  # nothing to send: no client is active
    assert receiver.bodies == []


def test_the_served_process_reports_to_sentry(
    tmp_path: Path, receiver: Receiver, env_without_chatlens: dict[str, str]
) -> None:
    """`chatlens serve` with SENTRY_DSN set starts, and a failure reaches the receiver."""
    server = Server(tmp_path, {**env_without_chatlens, "SENTRY_DSN": receiver.dsn})
    try:
        key = KEY_PATTERN.findall(server.output)[0]
        headers = {
            "Authorization": f"Bearer {key}",
            "X-Request-ID": "req-served-1",
            **PROXY_HEADERS,
        }
        assert httpx.get(f"{server.url}/api/conversations", headers=headers).status_code == 200
        # The schema broken under the running service: its next read fails unhandled.
        with sqlite3.connect(tmp_path / "chatlens.db") as database:
            database.execute("DROP TABLE conversation_metrics")
            database.execute("DROP TABLE feedback")
            database.execute("DROP TABLE messages")
            database.execute("DROP TABLE conversations")
        response = httpx.get(
            f"{server.url}/api/conversations", params={"q": EMAIL}, headers=headers, timeout=30
        )
        assert response.status_code == 500
        assert response.json()["error"]["request_id"] == "req-served-1"
        events = receiver.events(1)
    finally:
        server.stop()
    [event] = events
    assert event["tags"]["request_id"] == "req-served-1"
    assert event["tags"]["trace_id"] == response.headers["x-trace-id"]
    assert event["logentry"]["message"] == "unhandled_exception"
    assert event["exception"]["values"][-1]["type"] == "OperationalError"
    _assert_no_personal_data(receiver)


def test_an_invalid_dsn_stops_start_up_in_one_line(
    tmp_path: Path, env_without_chatlens: dict[str, str]
) -> None:
    env = {**env_without_chatlens, "SENTRY_DSN": "https://sentry.example.com/not-a-dsn"}
    done = subprocess.run(
        [sys.executable, "-m", "chatlens.cli", "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "chatlens: invalid setting SENTRY_DSN: not a Sentry DSN (Missing public key)"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing created
