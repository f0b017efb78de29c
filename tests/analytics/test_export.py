"""GET /api/analytics/export: the rows of a range as CSV, JSON lines or XLSX, streamed."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import openpyxl
import orjson
import pytest

from tests.analytics.test_summary import seed

pytestmark = pytest.mark.asyncio

RANGE = {"start_date": "2026-01-01", "end_date": "2026-01-08"}


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
        {"dataset": "messages", "start_date": "2026-01-08", "end_date": "2026-01-01"},
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
