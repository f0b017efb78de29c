"""The cost of observability: the same build with it fully on, and off by settings."""

# On: JSON log lines (access log included) to a file, 100 % trace sampling through a
# BatchSpanProcessor whose exporter discards, every metric. Off: access log, tracing and
# metrics switched off. Runs alternate (off, on, off, on, ...) so drift hits both alike.

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.chat import LoadRun, load_chat
from benchmarks.server import KEY, chatlens_command, running

_ROOT = Path(__file__).resolve().parents[1]

# Both at INFO: the access log is an INFO line, and its cost is part of what is measured.
ON = {
    "LOG_LEVEL": "INFO",
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    "CHATLENS_ACCESS_LOG": "true",
    "CHATLENS_METRICS_ENABLED": "true",
    "CHATLENS_TRACING_ENABLED": "true",
}
OFF = {
    "LOG_LEVEL": "INFO",
    "CHATLENS_ACCESS_LOG": "false",
    "CHATLENS_METRICS_ENABLED": "false",
    "CHATLENS_TRACING_ENABLED": "false",
}


@dataclass(frozen=True)
class ObservabilityResult:
    """Alternating off/on runs and how much throughput and tail latency on costs."""

    off: tuple[LoadRun, ...]
    on: tuple[LoadRun, ...]

    @property
    def throughput_kept(self) -> float:
        off = statistics.mean(run.stats["rps"] for run in self.off)
        on = statistics.mean(run.stats["rps"] for run in self.on)
        return on / off if off else float("nan")

    @property
    def p99_ratio(self) -> float:
        off = statistics.mean(run.stats["p99_ms"] for run in self.off)
        on = statistics.mean(run.stats["p99_ms"] for run in self.on)
        return on / off if off else float("nan")


def _create_admin(workdir: Path, env: Mapping[str, str]) -> str:
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


def _one(
    settings: Mapping[str, str], *, duration_s: float, concurrency: int, pin_cpus: bool
) -> LoadRun:
    # benchmarks.bench_app is imported by the server from its temp dir, so it needs the repo.
    env = {**settings, "PYTHONPATH": str(_ROOT)}
    command = [sys.executable, "-m", "benchmarks.bench_app"]
    with running(command, env=env, setup=_create_admin, pin_cpus=pin_cpus) as server:
        return load_chat(
            server, duration_s=duration_s, concurrency=concurrency, max_requests=1_000_000
        )


def bench_observability(
    *, duration_s: float, concurrency: int, pairs: int = 3, pin_cpus: bool = True
) -> ObservabilityResult:
    """`pairs` times: a run with observability off, then one with it on."""
    off: list[LoadRun] = []
    on: list[LoadRun] = []
    for _ in range(pairs):
        off.append(_one(OFF, duration_s=duration_s, concurrency=concurrency, pin_cpus=pin_cpus))
        on.append(_one(ON, duration_s=duration_s, concurrency=concurrency, pin_cpus=pin_cpus))
    return ObservabilityResult(off=tuple(off), on=tuple(on))
