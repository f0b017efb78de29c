"""Backups of the configured database, and restoring one.

PostgreSQL goes through `pg_dump -Fc` and `pg_restore`, SQLite through its online backup
API. A running service may be backed up either way; restore with the service stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import structlog
from sqlalchemy.engine import URL

from chatlens.db import backup_repository as repository
from chatlens.db.engine import create_engine
from chatlens.settings import Settings

log = structlog.get_logger(__name__)

PREFIX = "chatlens-"
SUFFIXES = {"postgresql": ".dump", "sqlite": ".sqlite3"}
# The first bytes of each kind of file, so a dump is never restored into the wrong database.
MAGIC = {"postgresql": b"PGDMP", "sqlite": b"SQLite format 3\x00"}


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message says why."""


def _kind(settings: Settings) -> str:
    return "sqlite" if settings.is_sqlite else "postgresql"


def _libpq(url: URL) -> tuple[list[str], dict[str, str]]:
    """pg_dump/pg_restore connection options and their whole environment, built from the
    URL: the password goes there, never on a command line where `ps` shows it."""
    args = [f"--dbname={url.database}"]
    if url.host:
        args.append(f"--host={url.host}")
    if url.port:
        args.append(f"--port={url.port}")
    if url.username:
        args.append(f"--username={url.username}")
    env = {"PGPASSWORD": url.password} if url.password else {}
    if isinstance(sslmode := url.query.get("sslmode") or url.query.get("ssl"), str):
        env["PGSSLMODE"] = sslmode  # as asyncpg reads it from the URL
    return args, env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (Debian: postgresql-client)")
    return path


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed: {done.stderr.strip()}")


def _copy_sqlite(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy even while the service writes."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def backup(settings: Settings, directory: Path, keep: int | None = None) -> Path:
    """Write a timestamped backup into `directory`; keep the newest `keep` of them."""
    kind = _kind(settings)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = directory / f"{PREFIX}{stamp}{SUFFIXES[kind]}"
    partial = target.with_name(target.name + ".partial")
    try:
        if kind == "sqlite":
            source = settings.database_path
            if source is None or not source.exists():
                raise BackupError(f"no SQLite database at {source}")
            _copy_sqlite(source, partial)
        else:
            args, env = _libpq(settings.database)
            _run(
                [_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={partial}", *args], env
            )
        partial.rename(target)  # a file with the final name is always complete
    finally:
        partial.unlink(missing_ok=True)
    removed = prune(directory, kind, keep) if keep else []
    log.info(
        "backup_written",
        path=str(target),
        size_bytes=target.stat().st_size,
        database=kind,
        removed=len(removed),
    )
    return target


def prune(directory: Path, kind: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups of this kind (by their time-stamped names)."""
    backups = sorted(directory.glob(f"{PREFIX}*{SUFFIXES[kind]}"))
    old = backups[: max(len(backups) - keep, 0)]
    for path in old:
        path.unlink()
    return old


async def _table_with_data(settings: Settings) -> str | None:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return await repository.first_table_with_rows(connection)
    finally:
        await engine.dispose()


def restore(settings: Settings, file: Path, *, force: bool = False) -> None:
    """Replace the configured database's content with a backup."""
    kind = _kind(settings)
    if not file.is_file():
        raise BackupError(f"no such file: {file}")
    with file.open("rb") as handle:
        head = handle.read(max(len(magic) for magic in MAGIC.values()))
    if not head.startswith(MAGIC[kind]):
        other = next((k for k, magic in MAGIC.items() if head.startswith(magic)), None)
        found = f"a {other} backup" if other else "not a chatlens backup"
        raise BackupError(f"{file} is {found}; the configured database is {kind}")
    holding = asyncio.run(_table_with_data(settings))
    if holding is not None and not force:
        raise BackupError(
            f"the database holds data (table {holding}); restore replaces it: add --force"
        )
    if kind == "sqlite":
        target = settings.database_path
        if target is None:
            raise BackupError("restore needs a SQLite file, not an in-memory database")
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_sqlite(file, target)
    else:
        args, env = _libpq(settings.database)
        _run(
            [
                _tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
                *args,
                str(file),
            ],
            env,
        )
    log.info("backup_restored", path=str(file), database=kind, replaced_data=holding is not None)
