"""Alembic, driven from code: the schema is made only by these migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from chatlens.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option(
        "file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(slug)s"
    )
    # Passed as an attribute, not an option: a password in the URL must not be %-interpolated.
    config.attributes["database_url"] = settings.database.render_as_string(hide_password=False)
    return config


def _run(settings: Settings, action: str, revision: str) -> None:
    config = alembic_config(settings)
    if settings.database_path is not None:
        settings.database_path.parent.mkdir(parents=True, exist_ok=True)
    getattr(command, action)(config, revision)


async def upgrade(settings: Settings, revision: str = "head") -> None:
    """Upgrade the database to a revision (default: the newest)."""
    await asyncio.to_thread(_run, settings, "upgrade", revision)


async def downgrade(settings: Settings, revision: str = "base") -> None:
    await asyncio.to_thread(_run, settings, "downgrade", revision)


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def is_at_head(engine: AsyncEngine) -> bool:
    return await current_revision(engine) == head_revision()
