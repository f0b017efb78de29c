"""GET /api/analytics/export: the rows of a range as CSV, JSON lines or XLSX, streamed."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import openpyxl
import orjson
import pytest

from chatlens.analytics import export as export_module
from chatlens.models import Conversation, ConversationMetrics, Message, MessageRole
from tests.analytics.conftest import Clock
from tests.analytics.test_summary import seed

pytestmark = pytest.mark.asyncio

RANGE = {"start": "2026-01-01", "end": "2026-01-08"}


async def export(client: httpx.AsyncClient, admin: Any, **params: str) -> httpx.Response:
    return await client.get(
        "/api/analytics/export", params={**RANGE, **params}, headers=admin.headers
    )


async def test_csv_of_the_fact_table(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed(sessionmaker, admin.id)
    response = await export(client, admin, dataset="conversation_metrics", format="csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == (
        'attachment; filename="chatlens-conversation_metrics-2026-01-01-2026-01-07.csv"'
    )
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert len(table) == 4  # the fifth turn is the day after the range
    assert sum(int(row["tokens_used"]) for row in table) == 180
    assert [row["timestamp"][:10] for row in table] == [
        "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05",
    ]  # fmt: skip


async def test_json_lines_with_a_filter(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed(sessionmaker, admin.id)
    response = await export(client, admin, dataset="conversations", format="json")
    assert response.status_code == 200
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert len(lines) == 4  # created in the range; the one from December is not
    assert {line["external_user_id"] for line in lines} == {"u1", "u2", None}
    shop = await export(client, admin, dataset="conversations", format="json", project_id="shop")
    assert len(shop.content.splitlines()) == 3


async def test_xlsx_opens_in_a_spreadsheet(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed(sessionmaker, admin.id)
    response = await export(client, admin, dataset="messages", format="xlsx")
    assert response.status_code == 200
    assert response.headers["content-disposition"].endswith('.xlsx"')
    book = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    sheet = book["messages"]
    values = list(sheet.iter_rows(values_only=True))
    assert values[0][:3] == ("conversation_id", "role", "content")
    assert len(values) == 1 + 4


@pytest.mark.parametrize(
    "params",
    [
        {"dataset": "users"},
        {"dataset": "messages", "format": "pdf"},
        {"dataset": "messages", "start": "2026-01-08", "end": "2026-01-01"},
    ],
)
async def test_bad_requests_are_422(
    client: httpx.AsyncClient, admin: Any, params: dict[str, str]
) -> None:
    assert (await export(client, admin, **params)).status_code == 422


async def test_only_admins(client: httpx.AsyncClient, account: Any) -> None:
    response = await client.get(
        "/api/analytics/export", params={**RANGE, "dataset": "messages"}, headers=account.headers
    )
    assert response.status_code == 403


def sheet_of(response: httpx.Response, name: str) -> Any:
    assert response.status_code == 200, response.text
    return openpyxl.load_workbook(io.BytesIO(response.content))[name]


async def test_xlsx_numbers_and_times_are_cells_a_spreadsheet_can_sum_and_sort(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed(sessionmaker, admin.id)
    sheet = sheet_of(
        await export(client, admin, dataset="conversation_metrics", format="xlsx"),
        "conversation_metrics",
    )
    header, *cells = list(sheet.iter_rows())
    column = {cell.value: index for index, cell in enumerate(header)}
    assert len(cells) == 4

    def values(name: str) -> list[Any]:
        return [row[column[name]] for row in cells]

    for cell in values("cost_usd") + values("tokens_used") + values("response_time_ms"):
        assert cell.data_type == "n"
        assert isinstance(cell.value, int | float) and not isinstance(cell.value, bool)
    assert sum(c.value for c in values("cost_usd")) == pytest.approx(0.10)
    assert sum(c.value for c in values("tokens_used")) == 180
    stamps = values("timestamp")
    assert all(cell.is_date for cell in stamps)
    assert [cell.value for cell in stamps] == [  # UTC, to the second
        datetime(2026, 1, 2, 10), datetime(2026, 1, 3, 10), datetime(2026, 1, 4, 12),
        datetime(2026, 1, 5, 10),
    ]  # fmt: skip
    assert {cell.data_type for cell in values("escalated")} == {"b"}
    assert [cell.value for cell in values("ttft_ms")] == [10, 20, None, 40]
    assert all(cell.data_type == "s" for cell in values("conversation_id"))


async def test_xlsx_text_stays_text(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    """A message that looks like a formula, a number or a link is shown as written."""
    when = datetime(2026, 1, 2, 9, tzinfo=UTC)
    conversation = Conversation(id=uuid.uuid4(), user_id=admin.id, created_at=when, updated_at=when)
    texts = ['=HYPERLINK("http://evil.test","refund")', "0012345", "https://example.test/a"]
    messages = [
        Message(
            id=uuid.uuid4(),
            conversation_id=conversation.id,
            role=MessageRole.user,
            content=text,
            created_at=when.replace(minute=n),
        )
        for n, text in enumerate(texts)
    ]
    async with sessionmaker() as session, session.begin():
        session.add(conversation)
        await session.flush()
        session.add_all(messages)
    sheet = sheet_of(await export(client, admin, dataset="messages", format="xlsx"), "messages")
    content = [row[2] for row in sheet.iter_rows(min_row=2)]
    assert [(cell.data_type, cell.value) for cell in content] == [("s", t) for t in texts]


async def test_csv_writes_numbers_in_full(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    when = datetime(2026, 1, 3, 8, tzinfo=UTC)
    costs = [Decimal("0"), Decimal("0.00012"), Decimal("1500")]
    rows = [
        ConversationMetrics(
            id=uuid.uuid4(),
            timestamp=when.replace(minute=n),
            conversation_id=uuid.uuid4(),
            message_id=uuid.uuid4(),
            user_id=admin.id,
            project_id="default",
            platform="web",
            confidence=0.00001,
            response_time_ms=0.5,
            prompt_tokens=0,
            completion_tokens=0,
            tokens_used=0,
            cost_usd=cost,
            status="complete",
        )
        for n, cost in enumerate(costs)
    ]
    async with sessionmaker() as session, session.begin():
        session.add_all(rows)
    response = await export(client, admin, dataset="conversation_metrics", format="csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["cost_usd"] for row in table] == ["0", "0.00012", "1500"]
    assert {row["confidence"] for row in table} == {"0.00001"}
    assert {row["response_time_ms"] for row in table} == {"0.5"}
    # JSON lines keep money exact, as a string, written out the same way.
    lines = await export(client, admin, dataset="conversation_metrics", format="json")
    parsed = [orjson.loads(line) for line in lines.content.splitlines()]
    assert [line["cost_usd"] for line in parsed] == ["0", "0.00012", "1500"]


async def test_xlsx_goes_on_to_a_new_sheet_when_one_is_full(
    client: httpx.AsyncClient,
    admin: Any,
    sessionmaker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await seed(sessionmaker, admin.id)
    monkeypatch.setattr(export_module, "XLSX_ROWS", 3)  # a header and two rows a sheet
    response = await export(client, admin, dataset="conversation_metrics", format="xlsx")
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert book.sheetnames == ["conversation_metrics", "conversation_metrics (2)"]
    first, second = (list(book[name].iter_rows(values_only=True)) for name in book.sheetnames)
    assert first[0] == second[0]  # each sheet has the header
    assert len(first) + len(second) == 2 + 4


async def test_the_range_and_its_defaults_are_the_summarys(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any, clock: Clock
) -> None:
    """Without `start` and `end`: the last 30 days, today (2026-01-07) included."""
    await seed(sessionmaker, admin.id)
    response = await client.get(
        "/api/analytics/export",
        params={"dataset": "conversation_metrics"},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"].endswith(
        '"chatlens-conversation_metrics-2025-12-09-2026-01-07.csv"'
    )
    assert len(list(csv.DictReader(io.StringIO(response.text)))) == 4
    summary = await client.get("/api/analytics/summary", headers=admin.headers)
    assert (summary.json()["start"], summary.json()["end"]) == (
        "2025-12-09T00:00:00Z",
        "2026-01-08T00:00:00Z",
    )
    assert summary.json()["ai"]["turns"] == 4
    only_end = await client.get(
        "/api/analytics/export",
        params={"dataset": "conversations", "end": "2026-01-03"},
        headers=admin.headers,
    )
    assert only_end.headers["content-disposition"].endswith('-2025-12-04-2026-01-02.csv"')


async def test_an_export_may_cover_any_range_a_summary_at_most_366_days(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed(sessionmaker, admin.id)
    years = {"start": "2020-01-01", "end": "2027-01-01"}
    response = await export(client, admin, dataset="conversation_metrics", **years)
    assert response.status_code == 200, response.text
    assert len(list(csv.DictReader(io.StringIO(response.text)))) == 5
    summary = await client.get("/api/analytics/summary", params=years, headers=admin.headers)
    assert summary.status_code == 422
    assert summary.json()["error"]["message"] == "end: a range covers at most 366 days"


BAD_RANGES = [
    ({"start": "2026-13-01"}, "query.start: Input should be a valid date"),
    ({"end": "soon"}, "query.end: Input should be a valid date"),
    ({"start": "2026-01-08", "end": "2026-01-01"}, "end: must be after start"),
    # Only `start` sent, after the default end (tomorrow): `start` is to fix.
    ({"start": "2026-02-01"}, "start: must be before end, which defaults to 2026-01-08"),
    ({"project_id": "Not A Project"}, "query.project_id: String should match pattern"),
]


@pytest.mark.parametrize("path", ["/api/analytics/export", "/api/analytics/summary"])
@pytest.mark.parametrize(("params", "message"), BAD_RANGES)
async def test_a_bad_range_names_the_parameter_sent(
    client: httpx.AsyncClient,
    admin: Any,
    clock: Clock,
    path: str,
    params: dict[str, str],
    message: str,
) -> None:
    response = await client.get(
        path, params={"dataset": "messages", **params}, headers=admin.headers
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert error["message"].startswith(message), error["message"]
    assert error["request_id"]


async def test_a_long_range_from_start_alone_names_start(
    client: httpx.AsyncClient, admin: Any, clock: Clock
) -> None:
    response = await client.get(
        "/api/analytics/summary", params={"start": "2024-01-01"}, headers=admin.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "start: a range covers at most 366 days"


@pytest.mark.parametrize("old", ["start_date", "end_date"])
async def test_the_old_range_names_are_refused_not_ignored(
    client: httpx.AsyncClient, admin: Any, old: str
) -> None:
    response = await client.get(
        "/api/analytics/export",
        params={"dataset": "messages", old: "2026-01-01"},
        headers=admin.headers,
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(f"{old}: renamed")
