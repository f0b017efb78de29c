"""POST /api/conversations/{id}/escalate: a coded reason and a free-text note."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openpyxl
import orjson
import pytest
import structlog
from structlog.testing import LogCapture

from chatlens.chat import conversations
from chatlens.models.conversation import ESCALATION_NOTE_MAX_CHARS
from tests.analytics.test_feedback import ask

pytestmark = pytest.mark.asyncio

NOTE = "Customer says the parcel came opened; wants a call back after 18:00."


async def test_the_note_is_kept_and_returned_and_only_its_length_is_logged(
    client: httpx.AsyncClient, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service's own lines, whatever logging configuration an earlier test left behind.
    captured = LogCapture()
    monkeypatch.setattr(conversations, "log", structlog.wrap_logger(None, processors=[captured]))
    turn = await ask(client, account, "how long does delivery take?")
    base = f"/api/conversations/{turn['conversation_id']}"
    escalated = await client.post(
        f"{base}/escalate",
        json={"reason": "damaged_parcel", "note": f"  {NOTE}\n"},
        headers=account.headers,
    )
    assert escalated.status_code == 200, escalated.text
    body = escalated.json()
    assert (body["status"], body["escalation_reason"]) == ("escalated", "damaged_parcel")
    assert body["escalation_note"] == NOTE  # trimmed
    read = await client.get(base, headers=account.headers)
    assert read.json()["escalation_note"] == NOTE
    listed = await client.get("/api/conversations", headers=account.headers)
    assert [c["escalation_note"] for c in listed.json()["items"]] == [NOTE]
    resolved = await client.post(
        f"{base}/resolve", json={"outcome": "resolved"}, headers=account.headers
    )
    assert resolved.json()["escalation_note"] == NOTE
    lines = captured.entries
    [line] = [line for line in lines if line["event"] == "conversation_escalated"]
    assert (line["reason"], line["note_chars"]) == ("damaged_parcel", len(NOTE))
    assert not [line for line in lines if "parcel came opened" in repr(line)]


async def test_a_note_too_long_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, account: Any
) -> None:
    turn = await ask(client, account, "how long does delivery take?")
    base = f"/api/conversations/{turn['conversation_id']}"
    too_long = await client.post(
        f"{base}/escalate",
        json={"reason": "vip", "note": "я" * (ESCALATION_NOTE_MAX_CHARS + 1)},
        headers=account.headers,
    )
    assert too_long.status_code == 422
    error = too_long.json()["error"]
    assert error["type"] == "validation_error"
    assert error["message"] == "note: String should have at most 500 characters"
    conversation = await client.get(base, headers=account.headers)
    assert (conversation.json()["status"], conversation.json()["escalation_reason"]) == (
        "open",
        None,
    )
    # 500 characters, each two bytes in UTF-8: the limit counts characters.
    longest = "я" * ESCALATION_NOTE_MAX_CHARS
    accepted = await client.post(
        f"{base}/escalate", json={"reason": "vip", "note": longest}, headers=account.headers
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["escalation_note"] == longest


@pytest.mark.parametrize("body", [None, {"reason": "vip"}, {"reason": "vip", "note": "   "}])
async def test_without_a_note_there_is_none(
    client: httpx.AsyncClient, account: Any, body: dict[str, str] | None
) -> None:
    turn = await ask(client, account, "how long does delivery take?")
    response = await client.post(
        f"/api/conversations/{turn['conversation_id']}/escalate",
        json=body,
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["escalation_note"] is None


async def test_the_note_is_in_every_export_of_conversations(
    client: httpx.AsyncClient, account: Any, admin: Any
) -> None:
    today = datetime.now(UTC).date()
    days = {"start": today.isoformat(), "end": (today + timedelta(days=2)).isoformat()}
    turn = await ask(client, account, "how long does delivery take?")
    await client.post(
        f"/api/conversations/{turn['conversation_id']}/escalate",
        json={"reason": "damaged_parcel", "note": NOTE},
        headers=account.headers,
    )

    async def export(fmt: str) -> httpx.Response:
        response = await client.get(
            "/api/analytics/export",
            params={"dataset": "conversations", "format": fmt, **days},
            headers=admin.headers,
        )
        assert response.status_code == 200, response.text
        return response

    [row] = csv.DictReader(io.StringIO((await export("csv")).text))
    assert (row["escalation_reason"], row["escalation_note"]) == ("damaged_parcel", NOTE)
    [line] = (await export("json")).content.splitlines()
    assert orjson.loads(line)["escalation_note"] == NOTE
    book = openpyxl.load_workbook(io.BytesIO((await export("xlsx")).content))
    header, values = book["conversations"].iter_rows(values_only=True)
    assert dict(zip(header, values, strict=True))["escalation_note"] == NOTE
