"""`chatlens backup` and `chatlens restore`: what went in through the API comes back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, select
from typer.testing import CliRunner

from chatlens.cli import app as cli
from chatlens.db import migrate
from chatlens.db.base import Model
from chatlens.db.engine import create_engine
from tests.helpers import api_on, make_settings, require_tool

runner = CliRunner()


@pytest.fixture(autouse=True)
def _pg_dump(backend_name: str) -> None:
    if backend_name == "postgresql":
        for tool in ("pg_dump", "pg_restore"):
            require_tool(tool, "Debian package postgresql-client")


TABLES = ("users", "api_keys", "conversations", "messages", "conversation_metrics", "feedback")


def invoke(url: str, *args: str) -> Any:
    return runner.invoke(cli, list(args), env={"DATABASE_URL": url})


async def _fill(url: str) -> dict[str, str]:
    """Conversations, messages and feedback, through the real API; returns the user's
    authorization headers."""
    async with api_on(url) as (client, headers):
        for text, platform in (("where is my order", "telegram"), ("I want a refund", "web")):
            turn = (
                await client.post(
                    "/chat", json={"message": text, "platform": platform}, headers=headers
                )
            ).json()
            follow = await client.post(
                "/chat",
                json={"message": "thanks", "conversation_id": turn["conversation_id"]},
                headers=headers,
            )
            assert follow.status_code == 200
            rated = await client.post(
                f"/api/messages/{turn['message_id']}/feedback",
                json={"rating": "up", "comment": "Привет, спасибо"},
                headers=headers,
            )
            assert rated.status_code == 201
            scored = await client.post(
                f"/api/conversations/{turn['conversation_id']}/csat",
                json={"score": 5},
                headers=headers,
            )
            assert scored.status_code == 201
    return headers


async def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(make_settings(url))
    try:
        async with engine.connect() as connection:
            result = {}
            for name in TABLES:
                table: Table = Model.metadata.tables[name]
                rows = await connection.execute(select(table).order_by(*table.primary_key))
                result[name] = [tuple(row) for row in rows]
            return result
    finally:
        await engine.dispose()


async def _conversations(url: str, headers: dict[str, str]) -> int:
    async with api_on(url) as (client, _):
        listed = await client.get("/api/conversations", headers=headers)
        assert listed.status_code == 200
        return len(listed.json()["items"])


async def test_backup_wipe_restore_brings_every_row_back(
    fresh_database_url: Any, tmp_path: Path
) -> None:
    url = await fresh_database_url("backup")
    settings = make_settings(url)
    await migrate.upgrade(settings)
    headers = await _fill(url)
    before = await _snapshot(url)
    assert len(before["conversations"]) == 2
    assert len(before["messages"]) == 8
    assert len(before["feedback"]) == 4

    folder = tmp_path / "backups"
    made = await asyncio.to_thread(invoke, url, "backup", "--dir", str(folder), "--keep", "2")
    assert made.exit_code == 0, made.output
    dump = Path(made.stdout.strip())
    assert dump.parent == folder
    assert (await asyncio.to_thread(dump.stat)).st_size > 0
    assert dump.name.startswith("chatlens-")

    # Restoring over data needs --force: nothing is replaced by accident.
    refused = await asyncio.to_thread(invoke, url, "restore", str(dump))
    assert refused.exit_code == 1
    assert "--force" in refused.output
    assert await _snapshot(url) == before

    await migrate.downgrade(settings, "base")  # wipe: every table dropped
    restored = await asyncio.to_thread(invoke, url, "restore", str(dump))
    assert restored.exit_code == 0, restored.output
    assert await _snapshot(url) == before
    assert await _conversations(url, headers) == 2  # the service reads the restored data

    # --force replaces data written after the backup.
    await _fill(url)
    assert len((await _snapshot(url))["conversations"]) == 4
    forced = await asyncio.to_thread(invoke, url, "restore", str(dump), "--force")
    assert forced.exit_code == 0, forced.output
    assert await _snapshot(url) == before


async def test_keep_prunes_old_backups_and_a_wrong_file_is_refused(
    fresh_database_url: Any, tmp_path: Path, backend_name: str
) -> None:
    url = await fresh_database_url("prune")
    await migrate.upgrade(make_settings(url))
    folder = tmp_path / "backups"
    written = []
    for _ in range(3):
        made = await asyncio.to_thread(invoke, url, "backup", "--dir", str(folder), "--keep", "2")
        assert made.exit_code == 0, made.output
        written.append(Path(made.stdout.strip()))
    assert sorted(folder.iterdir()) == written[1:]  # the oldest went

    stray = tmp_path / "notes.txt"
    stray.write_text("not a backup")
    refused = await asyncio.to_thread(invoke, url, "restore", str(stray))
    assert refused.exit_code == 1
    assert "not a chatlens backup" in refused.output
    other = "postgresql" if backend_name == "sqlite" else "sqlite"
    magic = {"postgresql": b"PGDMP\x01", "sqlite": b"SQLite format 3\x00"}[other]
    wrong = tmp_path / "other.bin"
    wrong.write_bytes(magic + b"\x00" * 64)
    mismatched = await asyncio.to_thread(invoke, url, "restore", str(wrong))
    assert mismatched.exit_code == 1
    assert f"is a {other} backup" in mismatched.output


async def test_the_cron_script_backs_up_and_keeps_the_newest(
    fresh_database_url: Any, tmp_path: Path, repo_root: Path, env_without_chatlens: dict[str, str]
) -> None:
    url = await fresh_database_url("script")
    await migrate.upgrade(make_settings(url))
    env = env_without_chatlens | {
        "DATABASE_URL": url,
        "BACKUP_DIR": str(tmp_path / "nightly"),
        "BACKUP_KEEP": "1",
        "CHATLENS_BIN": str(Path(sys.executable).with_name("chatlens")),
    }
    for _ in range(2):
        done = await asyncio.to_thread(
            subprocess.run,
            [str(repo_root / "scripts" / "backup_db.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    [kept] = (tmp_path / "nightly").iterdir()
    assert kept.name in done.stdout
