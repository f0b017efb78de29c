"""The migrations are the schema: up to head, down to base, and nothing the models lack."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from chatlens.db import migrate
from chatlens.db.base import Model
from chatlens.db.engine import create_engine
from tests.helpers import make_settings

pytestmark = pytest.mark.asyncio

TABLES = {"users", "api_keys", "conversations", "messages", "conversation_metrics"}


async def test_upgrade_to_head_matches_the_models_and_downgrade_to_base_removes_all(
    fresh_database_url: Any,
) -> None:
    settings = make_settings(await fresh_database_url("migrations"))
    engine = create_engine(settings)
    try:
        assert await migrate.current_revision(engine) is None
        await migrate.upgrade(settings)
        assert await migrate.is_at_head(engine)

        def check(connection: Connection) -> tuple[set[str], list[Any]]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return set(inspect(connection).get_table_names()), compare_metadata(
                context, Model.metadata
            )

        async with engine.connect() as connection:
            tables, differences = await connection.run_sync(check)
        assert tables >= TABLES
        assert differences == []  # the models and the migrations describe the same schema

        await migrate.downgrade(settings, "base")
        async with engine.connect() as connection:
            left = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert left <= {"alembic_version"}
        assert await migrate.current_revision(engine) is None

        await migrate.upgrade(settings)  # and back up again, cleanly
        assert await migrate.is_at_head(engine)
    finally:
        await engine.dispose()
