"""`chatlens serve` as a newcomer runs it: a real uvicorn process on an empty folder."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_first_start_prints_a_working_key_and_answers(
    workdir: Path, env_without_chatlens: dict[str, str]
) -> None:
    env = {**env_without_chatlens, "CHATLENS_BUILTIN_STREAM_DELAY_MS": "20"}
    server = Server(workdir, env)
    try:
        keys = KEY.findall(server.output)
        assert len(set(keys)) == 1, server.output
        key = keys[0]
        assert f"Bearer {key}" in server.output  # the curl example is ready to paste
        assert f"{server.url.replace('127.0.0.1', 'localhost')}/docs" in server.output
        assert (workdir / "chatlens.db").exists()
        headers = {"Authorization": f"Bearer {key}"}

        answer = httpx.post(
            f"{server.url}/chat",
            json={"message": "Where is my order?"},
            headers=headers,
            timeout=10,
        )
        assert answer.status_code == 200
        assert answer.json()["intent"] == "order_status"

        # A client that hangs up after the first delta: the partial answer is still stored.
        with httpx.stream(
            "POST",
            f"{server.url}/chat",
            json={"message": "I want my money back", "stream": True},
            headers=headers,
            timeout=10,
        ) as stream:
            for line in stream.iter_lines():
                if line.startswith("event: delta"):
                    break
        conversation = httpx.get(f"{server.url}/api/conversations?limit=1", headers=headers).json()[
            "items"
        ][0]
        deadline = time.monotonic() + 10
        statuses: list[str] = []
        while time.monotonic() < deadline:
            items = httpx.get(
                f"{server.url}/api/conversations/{conversation['id']}/messages", headers=headers
            ).json()["items"]
            statuses = [m["status"] for m in items if m["role"] == "assistant"]
            if statuses:
                break
            time.sleep(0.1)
        assert statuses == ["incomplete"]
        # uvicorn shuts down gracefully, then re-raises SIGTERM: -15 is a clean stop.
        assert server.stop() in (0, -signal.SIGTERM)
        assert "service_stopped" in server.output
    finally:
        if server.process.poll() is None:
            server.process.kill()

    again = Server(workdir, env_without_chatlens)
    try:
        assert KEY.search(again.output) is None  # shown once, on the first start only
        assert "chatlens keys create --user admin" in again.output
    finally:
        again.stop()


def test_a_busy_port_is_one_line_and_creates_nothing(
    workdir: Path, env_without_chatlens: dict[str, str]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "chatlens.cli", "serve", "--port", str(port)],
            cwd=workdir,
            env=env_without_chatlens,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"chatlens: port {port} on 127.0.0.1 is in use; choose another with --port or CHATLENS_PORT"
    ]
    assert KEY.search(done.stdout) is None
    assert list(workdir.iterdir()) == []  # no database, migrated or not
