"""Conversation CRUD and cursor pagination."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.asyncio


async def test_list_pages_through_every_conversation_once_newest_first(
    client: httpx.AsyncClient, account: Any
) -> None:
    created = []
    for i in range(7):
        response = await client.post(
            "/api/conversations", json={"title": f"c{i}"}, headers=account.headers
        )
        created.append(response.json()["id"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (
            await client.get("/api/conversations", params=params, headers=account.headers)
        ).json()
        seen += [c["id"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(created))


async def test_list_filters_by_status_and_project(client: httpx.AsyncClient, account: Any) -> None:
    await client.post("/chat", json={"message": "talk to a human please"}, headers=account.headers)
    await client.post(
        "/chat", json={"message": "hello", "project_id": "shop-2"}, headers=account.headers
    )
    escalated = (
        await client.get("/api/conversations?status=escalated", headers=account.headers)
    ).json()["items"]
    assert [c["status"] for c in escalated] == ["escalated"]
    shop2 = (
        await client.get("/api/conversations?project_id=shop-2", headers=account.headers)
    ).json()["items"]
    assert [c["project_id"] for c in shop2] == ["shop-2"]
    bad = await client.get("/api/conversations?status=lost", headers=account.headers)
    assert bad.status_code == 422 and bad.json()["error"]["message"].startswith("query.status")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "query.limit"),
        ("limit=101", "query.limit"),
        ("cursor=%%%", "query.cursor: not a cursor"),
    ],
)
async def test_bad_paging_parameters_are_422(
    client: httpx.AsyncClient, account: Any, query: str, field: str
) -> None:
    response = await client.get(f"/api/conversations?{query}", headers=account.headers)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(field)


async def test_messages_page_oldest_first(client: httpx.AsyncClient, account: Any) -> None:
    first = await client.post("/chat", json={"message": "hello"}, headers=account.headers)
    cid = first.json()["conversation_id"]
    for text in ("where is my order", "thanks"):
        await client.post(
            "/chat", json={"message": text, "conversation_id": cid}, headers=account.headers
        )
    page1 = (
        await client.get(f"/api/conversations/{cid}/messages?limit=4", headers=account.headers)
    ).json()
    page2 = (
        await client.get(
            f"/api/conversations/{cid}/messages",
            params={"limit": 4, "cursor": page1["next_cursor"]},
            headers=account.headers,
        )
    ).json()
    items = page1["items"] + page2["items"]
    assert page2["next_cursor"] is None
    assert [m["role"] for m in items] == ["user", "assistant"] * 3
    assert [m["content"] for m in items if m["role"] == "user"] == [
        "hello",
        "where is my order",
        "thanks",
    ]
    assert items[1]["intent"] == "greeting" and items[1]["model"] == "builtin-kb"


async def test_rename_and_delete(client: httpx.AsyncClient, account: Any) -> None:
    cid = (await client.post("/chat", json={"message": "hi"}, headers=account.headers)).json()[
        "conversation_id"
    ]
    renamed = await client.patch(
        f"/api/conversations/{cid}", json={"title": "  Greeting  "}, headers=account.headers
    )
    assert renamed.status_code == 200 and renamed.json()["title"] == "Greeting"
    blank = await client.patch(
        f"/api/conversations/{cid}", json={"title": "   "}, headers=account.headers
    )
    assert blank.status_code == 422
    deleted = await client.delete(f"/api/conversations/{cid}", headers=account.headers)
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await client.get(f"/api/conversations/{cid}/messages", headers=account.headers)
    assert gone.status_code == 404
    again = await client.delete(f"/api/conversations/{cid}", headers=account.headers)
    assert again.status_code == 404
