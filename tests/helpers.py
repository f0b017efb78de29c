"""Helpers shared by tests: strictness about real components and settings for a database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatlens.settings import Settings, load_settings

STRICT = os.environ.get("CHATLENS_STRICT_TESTS") == "1"


def require(available: bool, what: str) -> None:
    """Skip when a real component is missing — or fail, under CHATLENS_STRICT_TESTS=1."""
    if available:
        return
    if STRICT:
        pytest.fail(f"{what} is required (CHATLENS_STRICT_TESTS=1)")
    pytest.skip(f"{what} is not available")


def make_settings(database_url: str, **overrides: Any) -> Settings:
    return load_settings(
        database_url=database_url, environment="test", bootstrap_admin=False, **overrides
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`chatlens serve` in a subprocess; stdout (JSON logs) and stderr kept apart."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.log = cwd / f"serve-{self.port}.log"
        self.stdout = cwd / f"serve-{self.port}.jsonl"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatlens.cli", "serve", "--port", str(self.port), *args],
            cwd=cwd,
            env=env,
            stdout=self.stdout.open("wb"),
            stderr=self.log.open("wb"),
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.output}")

    @property
    def output(self) -> str:
        """Everything the server printed: the banner (stderr) and the log lines (stdout)."""
        return self.log.read_text(errors="replace") + self.stdout.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.stdout.read_text(errors="replace").splitlines()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)
