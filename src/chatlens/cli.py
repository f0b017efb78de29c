"""The `chatlens` command: serve, migrate, and manage users and API keys."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, BinaryIO, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from chatlens import __version__
from chatlens.analytics import export, report, s3, simulate, summary
from chatlens.app import configure_process
from chatlens.auth import service as auth
from chatlens.db import backup as backups
from chatlens.db import migrate
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.errors import ChatlensError
from chatlens.inference.knowledge_base import (
    KnowledgeBaseError,
    default_knowledge_base_path,
    load_knowledge_base,
)
from chatlens.inference.pricing import PricingError, load_pricing
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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [CHATLENS_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [CHATLENS_PORT]")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes [CHATLENS_WORKERS]")] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
) -> None:
    """Serve the API: migrate an embedded SQLite, create the first admin, start uvicorn."""
    import uvicorn

    settings = settings_or_exit()
    # JSON logs (and Sentry) from the first line, the admin set-up's included.
    configure_process(settings)
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    if reload and workers > 1:
        fail("--reload works with one worker only")
    try:
        # A bad knowledge base or price table stops here with one line.
        load_knowledge_base(settings.knowledge_base or default_knowledge_base_path())
        load_pricing(settings.pricing_file)
    except (KnowledgeBaseError, PricingError) as exc:
        fail(str(exc))
    # Before the database is made and an admin key printed that no server would accept.
    _check_port(host, port)

    admin_key = asyncio.run(_prepare_database(settings))
    if workers > 1:
        _prepare_multiprocess_metrics()
    _print_banner(settings, host, port, admin_key)
    uvicorn.run(
        "chatlens.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_level=settings.log_level.lower(),
        # Each worker's create_app routes uvicorn's records through our JSON logging, and
        # writes its own access line; uvicorn's plain-text config and access log stay off.
        log_config=None,
        access_log=False,
    )


def _check_port(host: str, port: int) -> None:
    """Exit with one line when uvicorn could not listen on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port a stopped server left in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(
                    f"port {port} on {host} is in use; choose another with --port or CHATLENS_PORT",
                    1,
                )
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)


def _prepare_multiprocess_metrics() -> None:
    """Workers share metrics through files in one fresh directory, wiped at every start."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
        prefix="chatlens-metrics-"
    )
    path = Path(directory)
    if path.exists():
        strangers = [p.name for p in path.iterdir() if p.suffix != ".db"]
        if strangers:
            # Wiping is only safe for a folder of metric files; a mistyped path is refused.
            fail(f"PROMETHEUS_MULTIPROC_DIR={path} holds other files ({strangers[0]}, ...)")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    # Read by prometheus_client in every worker process, which inherit this environment.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


async def _prepare_database(settings: Settings) -> str | None:
    engine = create_engine(settings)
    try:
        if settings.should_auto_migrate:
            await migrate.upgrade(settings)
        elif await migrate.current_revision(engine) is None:
            fail(
                "the database has no schema: run `chatlens db upgrade` "
                "(or set CHATLENS_AUTO_MIGRATE=true)"
            )
        if not settings.bootstrap_admin:
            return None
        async with create_sessionmaker(engine)() as session, session.begin():
            return await auth.bootstrap_admin(session)
    except OSError as exc:
        fail(f"cannot reach the database: {exc}", 1)
    finally:
        await engine.dispose()


def _print_banner(settings: Settings, host: str, port: int, admin_key: str | None) -> None:
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host  # noqa: S104
    base = f"http://{shown_host}:{port}"
    database = str(settings.database_path) if settings.database_path else "PostgreSQL"
    key = admin_key or "$CHATLENS_KEY"
    lines = [
        f"chatlens {__version__} · backend {settings.inference_backend} · database {database}",
        "",
    ]
    if admin_key:
        lines += [
            "First start: an admin user was created. Its API key is shown only now",
            "(it is stored as a SHA-256 hash) — copy it:",
            "",
            f"    {admin_key}",
            "",
        ]
    else:
        lines += [
            "Use your API key (new one: chatlens keys create --user admin):",
            "    export CHATLENS_KEY=cl_...",
            "",
        ]
    lines += [
        "Ask the bot:",
        f"    curl -H \"Authorization: Bearer {key}\" -H 'content-type: application/json' \\",
        f'      -d \'{{"message":"Where is my order?"}}\' {base}/chat',
        "",
        f"API docs  {base}/docs",
        f"Metrics   {base}/metrics",
        f"Health    {base}/health",
        "",
    ]
    # stderr: stdout carries only JSON log lines, for log shippers.
    typer.echo("\n".join(lines), err=True)


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


@app.command("backup")
def backup_command(
    directory: Annotated[Path, typer.Option("--dir", help="Folder of the backups")] = Path(
        "backups"
    ),
    keep: Annotated[
        int | None, typer.Option(min=1, help="Keep only the newest N backups in the folder")
    ] = None,
) -> None:
    """Back up the database (PostgreSQL: pg_dump -Fc; SQLite: online backup); print the file."""
    settings = open_database()
    try:
        path = backups.backup(settings, directory, keep)
    except (backups.BackupError, OSError) as exc:
        fail(str(exc), 1)
    typer.echo(str(path))


@app.command("restore")
def restore_command(
    file: Annotated[Path, typer.Argument(help="A file written by `chatlens backup`")],
    force: Annotated[
        bool, typer.Option(help="Replace a database that holds data (it is lost)")
    ] = False,
) -> None:
    """Restore a backup into the configured database; stop the service first."""
    settings = open_database(creates=True)
    try:
        backups.restore(settings, file, force=force)
    except (backups.BackupError, OSError) as exc:
        fail(str(exc), 1)
    typer.echo(f"restored {file}")


@app.command("export")
def export_command(
    dataset: Annotated[
        str, typer.Option(help="conversation_metrics, conversations or messages")
    ] = "conversation_metrics",
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD (UTC), inclusive")] = "",
    end: Annotated[
        str, typer.Option(help="Last day, YYYY-MM-DD (UTC), exclusive (default: tomorrow)")
    ] = "",
    fmt: Annotated[str, typer.Option("--format", help="csv, json (lines) or xlsx")] = "csv",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File to write, - for stdout (default: the usual name)"
        ),
    ] = None,
    project_id: Annotated[str | None, typer.Option(help="Only this project")] = None,
    platform: Annotated[str | None, typer.Option(help="Only this platform")] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Upload to S3-compatible storage instead: s3://bucket/prefix/ "
            "[CHATLENS_S3_ENDPOINT_URL for MinIO]",
        ),
    ] = None,
) -> None:
    """Write a dataset of a date range to a file, as GET /api/analytics/export streams it."""
    settings = open_database()
    if dataset not in export.SOURCES:
        fail(f"--dataset: one of {', '.join(export.SOURCES)}")
    if fmt not in export.MEDIA_TYPES:
        fail(f"--format: one of {', '.join(export.MEDIA_TYPES)}")
    try:
        # As the API: the last 30 days, today included.
        today = dt.datetime.now(dt.UTC).date()
        last = dt.date.fromisoformat(end) if end else today + dt.timedelta(days=1)
        first = dt.date.fromisoformat(start) if start else last - dt.timedelta(days=30)
        # It streams: any range may be exported, as through the API.
        filters = summary.Filters.from_dates(first, last, project_id, platform, max_range=None)
    except ValueError as exc:
        fail(f"--start/--end: {exc}")
    except ChatlensError as exc:
        fail(exc.message)
    name = export.file_name(dataset, filters, fmt)  # type: ignore[arg-type]
    location = None
    if to is not None:
        if output is not None:
            fail("--to and --output: choose one")
        try:
            location = s3.parse(to, name)
        except s3.S3Error as exc:
            fail(f"--to: {exc}")
    staging = tempfile.TemporaryDirectory(prefix="chatlens-export-") if location else None
    target = Path(staging.name) / name if staging else output or Path(name)

    async def write(file: BinaryIO) -> int:
        engine = create_engine(settings)
        written = 0
        try:
            await require_schema(engine)
            maker = create_sessionmaker(engine)
            async for chunk in export.stream(maker, dataset, filters, fmt):  # type: ignore[arg-type]
                try:
                    file.write(chunk)
                except BrokenPipeError:
                    raise
                except OSError as exc:  # a full disk is not the database's fault
                    raise _WriteFailed(exc) from exc
                written += len(chunk)
        finally:
            await engine.dispose()
        return written

    to_stdout = str(target) == "-"
    try:
        try:
            opened = contextlib.nullcontext(sys.stdout.buffer) if to_stdout else target.open("wb")
            with opened as file:
                size = run(write(file))
                file.flush()
        except _WriteFailed as exc:
            fail(f"cannot write {target}: {exc.__cause__}", 1)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            fail(f"cannot write {target}: {exc.strerror or exc}", 1)
        if location is None:
            # On stderr: stdout may be the export itself (-o -), piped into another tool.
            typer.echo(f"wrote {target} ({size:,} bytes)", err=True)
            return
        try:
            s3.upload(target, location, endpoint_url=settings.s3_endpoint_url)
        except s3.S3Error as exc:
            fail(str(exc), 1)
        typer.echo(f"uploaded {location.url} ({size:,} bytes)", err=True)
    finally:
        if staging is not None:
            staging.cleanup()


class _WriteFailed(Exception):
    """Writing an export's file failed (not reading the database)."""


@app.command("report")
def report_command(
    period: Annotated[str, typer.Option(help="day, week or month")] = "week",
    day: Annotated[str, typer.Option("--date", help="A day of the period (default: today)")] = "",
    fmt: Annotated[str, typer.Option("--format", help="md or json")] = "md",
    project_id: Annotated[str | None, typer.Option(help="Only this project")] = None,
    platform: Annotated[str | None, typer.Option(help="Only this platform")] = None,
) -> None:
    """Print a period's report: summary, change against the period before, anomalies."""
    settings = open_database()
    if period not in ("day", "week", "month"):
        fail("--period: day, week or month")
    if fmt not in ("md", "json"):
        fail("--format: md or json")
    try:
        when = dt.date.fromisoformat(day) if day else dt.datetime.now(dt.UTC).date()
    except ValueError as exc:
        fail(f"--date: {exc}")

    async def build(session: AsyncSession) -> dict[str, Any]:
        return await report.report(
            session,
            period=period,  # type: ignore[arg-type]
            day=when,
            project_id=project_id,
            platform=platform,
        )

    data = run_in_session(settings, build)
    if fmt == "json":
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(report.markdown(data), nl=False)


@app.command("simulate")
def simulate_command(
    conversations: Annotated[int, typer.Option(min=1, help="Conversations to run")] = 200,
    days: Annotated[int, typer.Option(min=1, max=366, help="Spread over the last N days")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same traffic")] = 1,
) -> None:
    """Fill the analytics with realistic support traffic, through the real service code."""
    settings = open_database()
    kb = load_knowledge_base(settings.knowledge_base or default_knowledge_base_path())
    # The app it drives logs several lines per request: a progress bar shows the run
    # instead, and only warnings and errors are logged.
    level = max(logging.getLevelNamesMapping()[settings.log_level], logging.WARNING)
    quiet = settings.model_copy(update={"log_level": logging.getLevelName(level)})

    async def main(advance: Callable[[], None]) -> simulate.Tally:
        from chatlens.app import create_app  # the whole service, for this command only

        application = create_app(quiet)
        # create_app sets the service's logging up, on stdout; this command's stays on stderr.
        configure_process(quiet, log_stream=CurrentStderr())
        try:
            async with application.router.lifespan_context(application):
                return await simulate.simulate(
                    application,
                    kb,
                    conversations=conversations,
                    days=days,
                    seed=seed,
                    on_conversation=advance,
                )
        except RuntimeError as exc:  # a request the service refused, or no schema
            fail(str(exc), 1)

    bar = Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("conversations"),
        TimeRemainingColumn(),
        # While the bar is drawn, rich prints what is written to sys.stderr (log lines, as
        # CurrentStderr follows it) above the bar.
        console=Console(stderr=True),
    )
    with bar:
        task = bar.add_task("simulate", total=conversations)
        tally = run(main(lambda: bar.advance(task)))
    resolved = ", ".join(f"{k} {v}" for k, v in sorted(tally.resolved.items())) or "none"
    typer.echo(
        f"simulated {tally.conversations} conversations over {days} days: {tally.turns} turns "
        f"({tally.streamed} streamed), {tally.ratings} ratings, {tally.csat} CSAT, "
        f"{tally.nps} NPS, {tally.escalated} escalated; closed: {resolved}"
    )


if __name__ == "__main__":
    app()
