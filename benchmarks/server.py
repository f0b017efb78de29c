"""Start chatlens in its own process on 127.0.0.1 with a fresh SQLite database."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Running:
    url: str
    key: str
    workdir: Path
    pid: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATLENS_", "OTEL_"))}
    env.pop("DATABASE_URL", None)
    # The bench-only app factory lives in this repository's benchmarks package.
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.update({"LOG_LEVEL": "INFO", **extra})
    return env


@contextmanager
def running(command: list[str], env: dict[str, str]) -> Iterator[Running]:
    """A server from `command` (+ --port) in a temp dir; its stdout (logs) goes to a file."""
    with tempfile.TemporaryDirectory(prefix="chatlens-bench-") as tmp:
        workdir = Path(tmp)
        port = _free_port()
        full_env = _clean_env(env)
        setup = subprocess.run(
            [sys.executable, "-m", "chatlens.cli", "users", "create", "bench", "--admin"],
            cwd=workdir,
            env=full_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if "no schema" in setup.stderr:
            subprocess.run(
                [sys.executable, "-m", "chatlens.cli", "db", "upgrade"],
                cwd=workdir,
                env=full_env,
                capture_output=True,
                check=True,
            )
            setup = subprocess.run(
                [sys.executable, "-m", "chatlens.cli", "users", "create", "bench", "--admin"],
                cwd=workdir,
                env=full_env,
                capture_output=True,
                text=True,
                check=True,
            )
        match = KEY.search(setup.stdout)
        if match is None:
            raise RuntimeError(f"no API key from `chatlens users create`: {setup.stderr}")
        with (workdir / "server.log").open("wb") as log:
            process = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=workdir,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 30
                while True:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((workdir / "server.log").read_text()[-2000:])
                    try:
                        if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                yield Running(url, match.group(), workdir, process.pid)
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
