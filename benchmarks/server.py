"""Run a chatlens server in its own process, on 127.0.0.1, in a fresh temporary directory."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
_POLL_S = 0.05

# Settings a developer's shell may hold; a benchmark must not inherit them.
_INHERITED_PREFIXES = ("CHATLENS_", "OTEL_")
_INHERITED_NAMES = (
    "DATABASE_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "SENTRY_DSN",
    "REDIS_URL",
    "PROMETHEUS_MULTIPROC_DIR",
)

# Prepares the working directory before the server starts and returns an API key.
Setup = Callable[[Path, Mapping[str, str]], str]


@dataclass(frozen=True)
class Server:
    """A started server: where it listens, the key to use, its process and output."""

    url: str
    key: str
    pid: int
    workdir: Path
    log: Path
    pinned: bool  # the server on one CPU, this process on the others

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) used by the server process so far; None off Linux."""
        return process_cpu_seconds(self.pid)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's output, for error messages."""
        return self.log.read_text(errors="replace")[-chars:]


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time of another process from /proc (all its threads); None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after the last ")" do not.
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU time spent busy on all CPUs since boot, from /proc/stat; None where unavailable."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    ticks = [int(value) for value in first[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def chatlens_command() -> list[str]:
    """The `chatlens` console script of this interpreter's environment, as a user runs it."""
    script = Path(sys.executable).parent / "chatlens"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "chatlens.cli"]


def bench_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without chatlens settings, plus `extra`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_INHERITED_PREFIXES) and name not in _INHERITED_NAMES
    }
    env.update({"LOG_LEVEL": "WARNING", "CHATLENS_HOST": HOST, **extra})
    return env


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def create_admin(workdir: Path, env: Mapping[str, str]) -> str:
    """Migrate and create a user with the CLI, as an operator would before a custom app."""
    cli = chatlens_command()
    for args in (["db", "upgrade"], ["users", "create", "bench", "--admin"]):
        done = subprocess.run(
            [*cli, *args],
            cwd=workdir,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"`chatlens {' '.join(args)}` failed: {done.stderr[-2000:]}")
    match = KEY.search(done.stdout)
    if match is None:
        raise RuntimeError(f"no API key from `chatlens users create`: {done.stdout[-2000:]}")
    return match.group()


@dataclass(frozen=True)
class CpuSplit:
    """Which CPUs the client (this process) and the servers run on."""

    client: frozenset[int]
    server: frozenset[int]


def split_cpus() -> CpuSplit | None:
    """The last CPU for servers, the others for this process; None with fewer than two."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return CpuSplit(client=frozenset(cpus[:-1]), server=frozenset(cpus[-1:]))


def _wait_for_key(process: subprocess.Popen[bytes], log: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        match = KEY.search(log.read_text(errors="replace"))
        if match is not None:
            return match.group()
        if process.poll() is not None:
            break
        time.sleep(_POLL_S)
    raise RuntimeError(f"no API key in the server's output:\n{log.read_text()[-2000:]}")


def _wait_until_live(
    process: subprocess.Popen[bytes], url: str, log: Path, deadline: float
) -> None:
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.get(f"{url}/health/live").status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(_POLL_S)
    raise RuntimeError(f"the server did not come up:\n{log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"server {process.pid} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s: killed")
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def running(
    command: list[str],
    *,
    env: Mapping[str, str] | None = None,
    setup: Setup | None = None,
    cpus: CpuSplit | None = None,
) -> Iterator[Server]:
    """Start `command --port N` in a fresh temp dir; stop it with SIGTERM and clean up."""
    # Without `setup` the key comes from the output: `chatlens serve` prints it on a first
    # start. Pinning keeps client and server from competing for one core of a small machine;
    # the split is chosen once by the caller, so servers started side by side are pinned
    # alike (this process is already pinned to the client CPUs when the second one starts).
    full_env = bench_env(env or {})
    client_cpus_before = os.sched_getaffinity(0) if cpus is not None else None
    with tempfile.TemporaryDirectory(prefix="chatlens-bench-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        key = setup(workdir, full_env) if setup is not None else None
        port = free_port()
        url = f"http://{HOST}:{port}"
        log = workdir / "server.log"
        # `chatlens serve` writes its JSON logs to stdout and the first-start banner with the
        # key to stderr: one file holds both, in order, and is polled for the key.
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=workdir,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            if cpus is not None:
                os.sched_setaffinity(process.pid, cpus.server)
                os.sched_setaffinity(0, cpus.client)
            deadline = time.monotonic() + START_TIMEOUT_S
            if key is None:
                key = _wait_for_key(process, log, deadline)
            _wait_until_live(process, url, log, deadline)
            yield Server(
                url=url,
                key=key,
                pid=process.pid,
                workdir=workdir,
                log=log,
                pinned=cpus is not None,
            )
        finally:
            try:
                _stop(process)
            finally:
                if client_cpus_before is not None:
                    os.sched_setaffinity(0, client_cpus_before)
