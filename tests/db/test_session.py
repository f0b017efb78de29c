"""One database session per request: authentication and the route share it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

pytestmark = pytest.mark.asyncio


@contextmanager
def _sessions_that_began() -> Iterator[list[int]]:
    """The identity of each session that began a transaction while the block runs."""
    began: list[int] = []

    def after_begin(session: Session, *_: Any) -> None:
        began.append(id(session))

    event.listen(Session, "after_begin", after_begin)
    try:
        yield began
    finally:
        event.remove(Session, "after_begin", after_begin)


async def test_the_key_lookup_and_the_route_use_one_session(
    client: httpx.AsyncClient, account: Any
) -> None:
    with _sessions_that_began() as began:
        # A new key: not cached yet, so it is looked up (and its use committed) before the
        # route reads the user with the same session.
        response = await client.get("/api/me", headers=account.headers)
    assert response.status_code == 200
    assert len(began) >= 2  # two transactions: the key's last use, then the route's read
    assert len(set(began)) == 1
