"""The `chatlens` command's application and what every command shares: its failures in one
line, the settings, the database it opens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from chatlens import __version__
from chatlens.app import configure_process
from chatlens.db import migrate
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.errors import ChatlensError
from chatlens.observability.logging import CurrentStderr
from chatlens.settings import Settings, SettingsError, load_settings

app = typer.Typer(help="chatlens: AI customer-support chat service.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
users_app = typer.Typer(help="Users.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")

T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"chatlens: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc))


def open_database(*, creates: bool = False) -> Settings:
    """The settings of a command that uses the database, which it names on stderr.

    The command's logs go to stderr too: stdout carries its result alone, for pipes (only
    `serve` logs on stdout, for the container's log shipper). A SQLite file that does not
    exist is refused unless the command is one that creates it.
    """
    settings = settings_or_exit()
    configure_process(settings, log_stream=CurrentStderr())
    url = settings.database
    typer.echo(f"chatlens: database {url.render_as_string(hide_password=True)}", err=True)
    path = settings.database_path
    if path is not None and not creates and not path.exists():
        # Connecting would create an empty file here, and the next command would use it.
        fail(f"no database at {url.database}: run `chatlens db upgrade` or `chatlens serve` first")
    return settings


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a ChatlensError or an unreachable database is one line."""
    try:
        return asyncio.run(main)
    except ChatlensError as exc:
        fail(exc.message, 1)
    except BrokenPipeError:
        raise  # the reader of stdout left (`| head`): typer ends the command quietly
    except OSError as exc:
        fail(f"cannot reach the database: {exc}", 1)


async def require_schema(engine: AsyncEngine) -> None:
    if await migrate.current_revision(engine) is None:
        fail("the database has no schema yet: run `chatlens db upgrade` first")


def run_in_session(settings: Settings, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run one transaction against the configured database."""

    async def main() -> T:
        engine = create_engine(settings)
        try:
            await require_schema(engine)
            async with create_sessionmaker(engine)() as session, session.begin():
                return await action(session)
        finally:
            await engine.dispose()

    return run(main())


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)
