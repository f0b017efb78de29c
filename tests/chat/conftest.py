"""What the chat tests against a model server share: a fake upstream per module, and
chatlens on a fresh database answering through it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.upstream import FakeUpstream
from tests.upstream_app import Running, running


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
async def chatlens(
    request: pytest.FixtureRequest, fresh_database_url: Any, upstream: FakeUpstream
) -> AsyncIterator[Running]:
    label = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    async with running(await fresh_database_url(label), upstream) as result:
        yield result
