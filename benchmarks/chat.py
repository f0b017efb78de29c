"""POST /chat (non-streamed) against `chatlens serve`: one uvicorn worker, SQLite."""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass

import httpx

from benchmarks.load import LoadStats, run_load
from benchmarks.server import (
    Server,
    chatlens_command,
    machine_busy_seconds,
    running,
    split_cpus,
)
from benchmarks.workloads import CHAT_MESSAGES

_ERRORS_SHOWN = 3
_SATURATED_PCT = 85.0
_NOISY_PCT = 25.0


@dataclass(frozen=True)
class CpuShare:
    """CPU used by each side over the same wall-clock window, in % of one core."""

    wall_s: float
    client_pct: float
    server_pct: float | None
    others_pct: float | None  # every other process on the machine, which skews the figures

    def verdict(self) -> str:
        """Which side was the bottleneck, as far as CPU use tells."""
        if self.server_pct is None:
            return "server CPU unknown (no /proc)"
        busiest = max(self.client_pct, self.server_pct)
        if busiest < _SATURATED_PCT:
            verdict = "neither side saturates a core (waiting on I/O or the other side)"
        else:
            side = "server" if self.server_pct >= self.client_pct else "client"
            verdict = f"the {side} saturates its core"
        if self.others_pct is not None and self.others_pct > _NOISY_PCT:
            verdict += "; the machine was busy with other work, so the figures are low"
        return verdict


@dataclass(frozen=True)
class LoadRun:
    """A load run and the CPU it cost on both sides."""

    stats: LoadStats
    cpu: CpuShare
    pinned: bool
    error_samples: tuple[str, ...]


def client_cpu_seconds() -> float:
    """CPU time (user + system) of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_chat(server: Server, *, duration_s: float, concurrency: int, max_requests: int) -> LoadRun:
    """Load POST /chat of a running server, rotating through CHAT_MESSAGES."""
    errors: list[str] = []

    def on_error(message: str) -> None:
        if len(errors) < _ERRORS_SHOWN:
            errors.append(message)

    async def send(client: httpx.AsyncClient, number: int) -> httpx.Response:
        message = CHAT_MESSAGES[number % len(CHAT_MESSAGES)]
        return await client.post("/chat", json={"message": message})

    # Both sides are measured over the same window (warm-up included), so they compare.
    machine_before = machine_busy_seconds()
    server_before = server.cpu_seconds()
    client_before = client_cpu_seconds()
    started = time.perf_counter()
    stats = asyncio.run(
        run_load(
            send,
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.key}"},
            duration_s=duration_s,
            concurrency=concurrency,
            max_requests=max_requests,
            on_error=on_error,
        )
    )
    wall = time.perf_counter() - started
    client_used = client_cpu_seconds() - client_before
    server_after = server.cpu_seconds()
    machine_after = machine_busy_seconds()
    server_used = (
        None if server_before is None or server_after is None else server_after - server_before
    )
    others_used = (
        None
        if server_used is None or machine_before is None or machine_after is None
        else max(0.0, machine_after - machine_before - server_used - client_used)
    )
    cpu = CpuShare(
        wall_s=round(wall, 2),
        client_pct=round(100.0 * client_used / wall, 1),
        server_pct=None if server_used is None else round(100.0 * server_used / wall, 1),
        others_pct=None if others_used is None else round(100.0 * others_used / wall, 1),
    )
    return LoadRun(stats=stats, cpu=cpu, pinned=server.pinned, error_samples=tuple(errors))


def bench_chat(
    *, duration_s: float, concurrency: int, max_requests: int = 1_000_000, pin_cpus: bool = True
) -> LoadRun:
    """Start `chatlens serve` as a user would (fresh directory, first start) and load it."""
    cpus = split_cpus() if pin_cpus else None
    with running([*chatlens_command(), "serve"], cpus=cpus) as server:
        return load_chat(
            server,
            duration_s=duration_s,
            concurrency=concurrency,
            max_requests=max_requests,
        )
