"""`chatlens db`, `chatlens users` and `chatlens keys`: the schema, users and API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.auth import service as auth
from chatlens.cli.base import (
    db_app,
    keys_app,
    open_database,
    run,
    run_in_session,
    users_app,
)
from chatlens.db import migrate
from chatlens.db.engine import create_engine


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Upgrade the schema (default: to the newest migration); creates a SQLite database."""
    settings = open_database(creates=True)
    run(migrate.upgrade(settings, revision))
    typer.echo(f"database at revision {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Downgrade the schema to a revision (`base` removes every table)."""
    settings = open_database()
    run(migrate.downgrade(settings, revision))
    typer.echo(f"database at revision {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one."""
    settings = open_database()

    async def read() -> str | None:
        engine = create_engine(settings)
        try:
            return await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    typer.echo(f"current: {run(read()) or 'none'}  head: {migrate.head_revision()}")


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="A unique name, e.g. the team or the widget")],
    admin: Annotated[bool, typer.Option("--admin", help="May use the admin routes")] = False,
    key: Annotated[bool, typer.Option(help="Also create an API key and print it")] = True,
) -> None:
    """Create a user (and, by default, its first API key)."""
    settings = open_database()

    async def action(session: AsyncSession) -> tuple[str, str | None]:
        user = await auth.create_user(session, name=name, is_admin=admin)
        secret = (await auth.create_key(session, user=user))[1] if key else None
        return str(user.id), secret

    user_id, secret = run_in_session(settings, action)
    typer.echo(f"user {name} created: id {user_id}{' (admin)' if admin else ''}")
    if secret:
        typer.echo(f"API key (shown once): {secret}")


@users_app.command("list")
def users_list() -> None:
    """List users."""
    settings = open_database()

    async def action(session: AsyncSession) -> list[str]:
        return [
            f"{u.id}  {u.name}{'  admin' if u.is_admin else ''}"
            for u in await auth.list_users(session)
        ]

    for line in run_in_session(settings, action):
        typer.echo(line)


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="User id or name")],
    name: Annotated[str | None, typer.Option(help="A label for the key")] = None,
) -> None:
    """Create an API key for a user and print it (once)."""
    settings = open_database()

    async def action(session: AsyncSession) -> tuple[str, str]:
        owner = await auth.resolve_user(session, user)
        row, secret = await auth.create_key(session, user=owner, name=name)
        return str(row.id), secret

    key_id, secret = run_in_session(settings, action)
    typer.echo(f"key {key_id} created for {user}")
    typer.echo(f"API key (shown once): {secret}")


@keys_app.command("list")
def keys_list(user: Annotated[str, typer.Option("--user", help="User id or name")]) -> None:
    """List a user's keys (never the keys themselves)."""
    settings = open_database()

    async def action(session: AsyncSession) -> list[str]:
        owner = await auth.resolve_user(session, user)
        return [
            f"{k.id}  {k.prefix}…  {'revoked' if k.revoked_at else 'active'}  {k.name or ''}"
            for k in await auth.list_keys(session, user=owner)
        ]

    for line in run_in_session(settings, action):
        typer.echo(line)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id, or its prefix (cl_xxxxxxx)")],
) -> None:
    """Revoke an API key; requests with it fail from now on."""
    settings = open_database()

    async def action(session: AsyncSession) -> str:
        return str((await auth.revoke_key(session, key_id_or_prefix=key)).id)

    typer.echo(f"key {run_in_session(settings, action)} revoked")
