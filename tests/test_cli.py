"""The `chatlens` command: migrations, users, keys, and clear failures."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from chatlens.app import create_app
from chatlens.cli import app as cli
from tests.helpers import free_port, make_settings

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")
runner = CliRunner()


def invoke(url: str, *args: str, **env: str) -> Any:
    return runner.invoke(cli, list(args), env={"DATABASE_URL": url, **env})


def whoami(url: str, key: str) -> int:
    async def call() -> int:
        app = create_app(make_settings(url))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get("/api/me", headers={"Authorization": f"Bearer {key}"})
                return response.status_code

    return asyncio.run(call())


async def test_cli_database_users_and_keys(fresh_database_url: Any) -> None:
    url = await fresh_database_url("cli")
    await asyncio.to_thread(_cli_flow, url)


def _cli_flow(url: str) -> None:
    before = invoke(url, "users", "list")
    assert before.exit_code == 2
    assert "run `chatlens db upgrade`" in before.output
    sqlite_file = make_settings(url).database_path
    assert sqlite_file is None or not sqlite_file.exists()  # only asked for, not created

    upgraded = invoke(url, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    current = invoke(url, "db", "current")
    assert re.search(r"current: (\w+)\s+head: \1", current.output), current.output

    created = invoke(url, "users", "create", "alice", "--admin")
    assert created.exit_code == 0, created.output
    assert "(admin)" in created.output
    first_key = KEY.search(created.output)
    assert first_key is not None
    duplicate = invoke(url, "users", "create", "alice")
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output

    made = invoke(url, "keys", "create", "--user", "alice", "--name", "widget")
    assert made.exit_code == 0, made.output
    second_key = KEY.search(made.output)
    assert second_key is not None
    assert whoami(url, second_key.group()) == 200

    listed = invoke(url, "keys", "list", "--user", "alice")
    assert listed.output.count("active") == 2
    assert second_key.group() not in listed.output  # keys are never shown again

    revoked = invoke(url, "keys", "revoke", second_key.group()[:10])
    assert revoked.exit_code == 0, revoked.output
    assert whoami(url, second_key.group()) == 401
    assert whoami(url, first_key.group()) == 200
    missing = invoke(url, "keys", "revoke", "cl_nothere")
    assert missing.exit_code == 1
    assert "not found" in missing.output

    assert "alice  admin" in invoke(url, "users", "list").output


def test_invalid_setting_is_one_line_and_exit_2() -> None:
    result = runner.invoke(cli, ["users", "list"], env={"DATABASE_URL": "mysql://x/y"})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("chatlens: invalid setting DATABASE_URL")


def test_serve_refuses_a_malformed_knowledge_base(tmp_path: Path) -> None:
    broken = tmp_path / "kb.yaml"
    broken.write_text("intents: [ {name: x")
    result = runner.invoke(
        cli,
        ["serve"],
        env={
            "CHATLENS_KNOWLEDGE_BASE": str(broken),
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
        },
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert str(broken) in lines[0]
    assert not (tmp_path / "x.db").exists()  # nothing was started or created


NEEDS_A_DATABASE = [
    ["users", "list"],
    ["users", "create", "alice"],
    ["keys", "create", "--user", "alice"],
    ["keys", "list", "--user", "alice"],
    ["keys", "revoke", "cl_abcdefg"],
    ["report"],
    ["export"],
    ["simulate", "--conversations", "1"],
    ["db", "current"],
    ["db", "downgrade", "base"],
    ["backup"],
]


@pytest.mark.parametrize("args", NEEDS_A_DATABASE, ids=" ".join)
def test_a_folder_without_a_database_is_told_so_and_left_empty(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run where no database is, a command says where it looked and creates nothing."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, args, env={"DATABASE_URL": None})
    assert result.exit_code != 0
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "chatlens: database sqlite+aiosqlite:///./chatlens.db",
        "chatlens: no database at ./chatlens.db: "
        "run `chatlens db upgrade` or `chatlens serve` first",
    ]
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_postgresql_is_one_line_and_its_password_is_hidden() -> None:
    port = free_port()  # nothing listens there: the connection is refused
    url = f"postgresql+asyncpg://chatlens:s3cret@127.0.0.1:{port}/chatlens"
    for args in (["users", "list"], ["db", "current"]):
        result = invoke(url, *args)
        assert result.exit_code == 1, result.output
        database, error = result.stderr.splitlines()
        assert (
            database
            == f"chatlens: database postgresql+asyncpg://chatlens:***@127.0.0.1:{port}/chatlens"
        )
        assert error.startswith("chatlens: cannot reach the database: ")
        assert "s3cret" not in result.output


async def test_cli_export_writes_the_same_rows_as_the_api(
    fresh_database_url: Any, tmp_path: Path
) -> None:
    from tests.analytics.test_summary import seeded_database

    url = await seeded_database(fresh_database_url, "cli-export")

    def run() -> None:
        out = tmp_path / "facts.csv"
        done = invoke(
            url, "export", "--dataset", "conversation_metrics", "--start", "2026-01-01",
            "--end", "2026-01-08", "--format", "csv", "-o", str(out),
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        assert "wrote" in done.output
        lines = out.read_text().splitlines()
        assert lines[0].startswith("timestamp,")
        assert len(lines) == 1 + 4
        wrong = invoke(url, "export", "--dataset", "users")
        assert wrong.exit_code == 2
        assert "--dataset" in wrong.output
        # A file that cannot be written is said to be so: the database is not at fault.
        for place, reason in (
            (tmp_path / "no" / "such" / "folder.csv", "No such file or directory"),
            (Path("/dev/full"), "No space left on device"),
        ):
            unwritten = invoke(
                url, "export", "--start", "2026-01-01", "--end", "2026-01-08", "-o", str(place)
            )
            assert unwritten.exit_code == 1
            assert f"chatlens: cannot write {place}: {reason}" in unwritten.stderr
            assert "database" not in unwritten.stderr.replace("chatlens: database ", "")

    await asyncio.to_thread(run)


async def test_report_and_export_pipe_their_result_alone_and_log_on_stderr(
    fresh_database_url: Any, env_without_chatlens: dict[str, str]
) -> None:
    """stdout is the result, for `| jq` or ClickHouse; the command's log lines go to stderr.
    The export's default range, like the API's, ends with today."""
    from chatlens.db import migrate
    from tests.helpers import api_on

    url = await fresh_database_url("cli-stdout")
    await migrate.upgrade(make_settings(url))
    async with api_on(url) as (client, headers):
        asked = await client.post("/chat", json={"message": "where is my order"}, headers=headers)
        assert asked.status_code == 200
    # SQL statements are logged: lines that must not reach stdout.
    env = env_without_chatlens | {"DATABASE_URL": url, "CHATLENS_DATABASE_ECHO": "true"}

    def chatlens(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "chatlens.cli", *args], env=env, capture_output=True, timeout=60
        )

    def log_lines(stderr: bytes) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]

    reported = await asyncio.to_thread(chatlens, "report", "--period", "day", "--format", "json")
    assert reported.returncode == 0, reported.stderr
    assert orjson.loads(reported.stdout)["summary"]["business"]["conversations"] == 1
    assert any(r["logger"].startswith("sqlalchemy.engine") for r in log_lines(reported.stderr))

    exported = await asyncio.to_thread(chatlens, "export", "--format", "csv", "-o", "-")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout.decode())))
    assert [row["message_id"] for row in rows] == [asked.json()["message_id"]]
    assert any(r["logger"].startswith("sqlalchemy.engine") for r in log_lines(exported.stderr))
    assert b"wrote - (" in exported.stderr

    def closed_early() -> tuple[int, bytes]:
        """`chatlens export -o - | head -c 0`: the reader is gone before the first byte."""
        process = subprocess.Popen(
            [sys.executable, "-m", "chatlens.cli", "export", "-o", "-"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        stderr = process.stderr.read()
        return process.wait(timeout=60), stderr

    code, stderr = await asyncio.to_thread(closed_early)
    assert code == 1
    assert b"Traceback" not in stderr
    assert b"BrokenPipeError" not in stderr
