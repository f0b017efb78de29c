"""The `chatlens` command: migrations, users, keys, and clear failures."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from chatlens.app import create_app
from chatlens.cli import app as cli
from tests.helpers import make_settings

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
    assert "run `chatlens db upgrade` first" in before.output

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

    await asyncio.to_thread(run)


async def test_export_to_stdout_is_only_the_data_and_includes_today(
    fresh_database_url: Any, env_without_chatlens: dict[str, str]
) -> None:
    """`-o -` pipes the export into another tool (e.g. ClickHouse): the status line goes to
    stderr, and the default range, like the API's, ends with today."""
    import subprocess
    import sys

    import orjson

    from chatlens.db import migrate
    from tests.helpers import api_on

    url = await fresh_database_url("cli-stdout")
    await migrate.upgrade(make_settings(url))
    async with api_on(url) as (client, headers):
        asked = await client.post("/chat", json={"message": "where is my order"}, headers=headers)
        assert asked.status_code == 200
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chatlens.cli", "export", "--format", "json", "-o", "-"],
        env=env_without_chatlens | {"DATABASE_URL": url},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [row["message_id"] for row in rows] == [asked.json()["message_id"]]
    assert b"wrote - (" in done.stderr
