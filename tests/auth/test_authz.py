"""Who may do what: keys, revocation, owner isolation, admin routes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from chatlens.auth.keys import hash_key

pytestmark = pytest.mark.asyncio


async def test_no_key_bad_key_and_malformed_header_are_401_with_www_authenticate(
    client: httpx.AsyncClient, account: Any
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer cl_" + "x" * 43},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Basic {account.key}"},
        {"Authorization": account.key},
    ):
        response = await client.post("/chat", json={"message": "hi"}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "unauthorized"
    ok = await client.post("/chat", json={"message": "hi"}, headers=account.headers)
    assert ok.status_code == 200


async def test_keys_are_stored_only_as_hashes(account: Any, sessionmaker: Any) -> None:
    from sqlalchemy import select

    from chatlens.models import ApiKey

    async with sessionmaker() as session:
        [key] = (await session.scalars(select(ApiKey).where(ApiKey.user_id == account.id))).all()
    assert account.key.startswith("cl_") and len(account.key) == 46
    assert key.key_hash == hash_key(account.key)
    assert account.key not in (key.key_hash, key.prefix)
    assert account.key.startswith(key.prefix)


async def test_a_revoked_key_fails(
    client: httpx.AsyncClient, admin: Any, make_account: Any, sessionmaker: Any
) -> None:
    user = await make_account()
    created = await client.post(f"/api/admin/users/{user.id}/keys", headers=admin.headers)
    assert created.status_code == 201
    new_key = created.json()["key"]
    me = await client.get("/api/me", headers={"Authorization": f"Bearer {new_key}"})
    assert me.json()["name"] == user.name
    revoked = await client.delete(f"/api/admin/keys/{created.json()['id']}", headers=admin.headers)
    assert revoked.status_code == 204
    after = await client.get("/api/me", headers={"Authorization": f"Bearer {new_key}"})
    assert after.status_code == 401
    assert after.json()["error"]["message"] == "API key has been revoked"
    # The user's other key still works.
    assert (await client.get("/api/me", headers=user.headers)).status_code == 200
    keys = (await client.get(f"/api/admin/users/{user.id}/keys", headers=admin.headers)).json()
    assert sorted(k["revoked_at"] is None for k in keys) == [False, True]
    assert all("key" not in k for k in keys)


async def test_another_users_conversation_is_404_everywhere_and_never_listed(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    owner, other = await make_account(), await make_account()
    answer = await client.post("/chat", json={"message": "refund please"}, headers=owner.headers)
    cid = answer.json()["conversation_id"]
    attempts = [
        ("GET", f"/api/conversations/{cid}", None),
        ("PATCH", f"/api/conversations/{cid}", {"title": "mine now"}),
        ("DELETE", f"/api/conversations/{cid}", None),
        ("GET", f"/api/conversations/{cid}/messages", None),
        ("POST", f"/api/conversations/{cid}/messages", {"message": "hi", "stream": False}),
        ("POST", f"/api/conversations/{cid}/regenerate", {"stream": False}),
        ("POST", "/chat", {"message": "hi", "conversation_id": cid}),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=other.headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["type"] == "not_found"
    assert (await client.get("/api/conversations", headers=other.headers)).json()["items"] == []
    # ...and none of those attempts changed anything for the owner.
    mine = await client.get(f"/api/conversations/{cid}", headers=owner.headers)
    assert mine.status_code == 200 and mine.json()["title"] == "refund please"
    messages = await client.get(f"/api/conversations/{cid}/messages", headers=owner.headers)
    assert len(messages.json()["items"]) == 2


async def test_admin_routes_are_403_for_others_and_work_for_admins(
    client: httpx.AsyncClient, account: Any, admin: Any
) -> None:
    for method, path in (
        ("GET", "/api/admin/users"),
        ("POST", "/api/admin/users"),
        ("GET", f"/api/admin/users/{account.id}/keys"),
        ("POST", f"/api/admin/users/{account.id}/keys"),
        ("DELETE", f"/api/admin/keys/{uuid.uuid4()}"),
    ):
        response = await client.request(
            method, path, json={"name": "x"} if method == "POST" else None, headers=account.headers
        )
        assert response.status_code == 403, path
        assert response.json()["error"]["type"] == "forbidden"
        anonymous = await client.request(method, path)
        assert anonymous.status_code == 401, path

    created = await client.post(
        "/api/admin/users", json={"name": "widget-eu"}, headers=admin.headers
    )
    assert created.status_code == 201
    assert created.json()["is_admin"] is False
    duplicate = await client.post(
        "/api/admin/users", json={"name": "widget-eu"}, headers=admin.headers
    )
    assert duplicate.status_code == 409
    names = [
        u["name"] for u in (await client.get("/api/admin/users", headers=admin.headers)).json()
    ]
    assert "widget-eu" in names
    missing = await client.post(f"/api/admin/users/{uuid.uuid4()}/keys", headers=admin.headers)
    assert missing.status_code == 404
