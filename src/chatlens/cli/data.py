"""`chatlens backup`, `restore`, `export`, `report` and `simulate`: the data, out and in."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.analytics import export, report, s3, simulate, summary
from chatlens.app import configure_process
from chatlens.cli.base import (
    app,
    fail,
    open_database,
    require_schema,
    run,
    run_in_session,
)
from chatlens.db import backup as backups
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.errors import ChatlensError
from chatlens.inference.knowledge_base import (
    default_knowledge_base_path,
    load_knowledge_base,
)
from chatlens.observability.logging import CurrentStderr


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
