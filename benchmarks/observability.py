"""The cost of observability: the same build with it fully on, and off by settings."""

# On: JSON log lines (access log included) to a file, traces sampled as production samples
# them (parent-based, a tenth of new traces) or all of them (`sampler`), through a
# BatchSpanProcessor whose exporter discards, every metric. Off: access log, tracing and
# metrics switched off.
#
# A run of 10 s per side, one after the other, drifts by ±10 % on a shared virtual machine
# (the same build measured twice differs that much), which is more than the effect being
# measured. So both servers run side by side, pinned to the same CPU, and the load
# alternates between them in short slices (off, on, on, off, off, on, ...): whatever the
# machine does hits both alike. Each round starts the two servers afresh, the side started
# first swapping between rounds, because a process started first was seen to run a few
# per cent faster for its whole life; both get the same PYTHONHASHSEED, so that dicts and
# sets are laid out alike in the two (a random seed per process is one source of that).

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks import relay
from benchmarks.load import Budget, percentile, phase
from benchmarks.server import CpuSplit, Server, create_admin, running
from benchmarks.workloads import CHAT_MESSAGES

_ROOT = Path(__file__).resolve().parents[1]
SIDES = ("off", "on")

# Trace sampling of the on side: the production default of the README (a tenth of the
# traces that no caller decided for), or every trace.
SAMPLERS = {
    "ratio": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    "always": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
}
SAMPLER_LABELS = {"ratio": "10 % of traces sampled", "always": "100 % of traces sampled"}


def on_settings(sampler: str) -> dict[str, str]:
    """Observability fully on, traces sampled by `sampler` (a key of SAMPLERS)."""
    # Both at INFO: the access log is an INFO line, and its cost is part of what is measured.
    return {
        "LOG_LEVEL": "INFO",
        **SAMPLERS[sampler],
        "CHATLENS_ACCESS_LOG": "true",
        "CHATLENS_METRICS_ENABLED": "true",
        "CHATLENS_TRACING_ENABLED": "true",
    }


ON = on_settings("always")
OFF = {
    "LOG_LEVEL": "INFO",
    "CHATLENS_ACCESS_LOG": "false",
    "CHATLENS_METRICS_ENABLED": "false",
    "CHATLENS_TRACING_ENABLED": "false",
}


@dataclass
class Side:
    """What one side (off or on) served over all its slices."""

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    slice_rps: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000.0 * self.server_cpu_s / self.requests if self.requests else float("nan")

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)


@dataclass(frozen=True)
class Round:
    """One round: both servers started afresh, `first` started first."""

    first: str
    off: Side
    on: Side

    @property
    def throughput_kept(self) -> float:
        return self.on.rps / self.off.rps if self.off.rps else float("nan")

    @property
    def pair_ratios(self) -> list[float]:
        return [
            on / off for off, on in zip(self.off.slice_rps, self.on.slice_rps, strict=True) if off
        ]


@dataclass(frozen=True)
class ObservabilityResult:
    """Every round, and what on costs over all of them."""

    rounds: tuple[Round, ...]
    slice_s: float
    control: bool  # both sides off: what the method reads when there is nothing to find
    sampler: str = "always"  # the on side's, a key of SAMPLERS

    def _total(self, side: str) -> Side:
        total = Side()
        for one in self.rounds:
            part: Side = getattr(one, side)
            total.requests += part.requests
            total.errors += part.errors
            total.seconds += part.seconds
            total.server_cpu_s += part.server_cpu_s
            total.latencies_ms.extend(part.latencies_ms)
            total.slice_rps.extend(part.slice_rps)
        return total

    @property
    def off(self) -> Side:
        return self._total("off")

    @property
    def on(self) -> Side:
        return self._total("on")

    @property
    def throughput_kept(self) -> float:
        """On's requests/s over off's, every slice of every round pooled."""
        return self.on.rps / self.off.rps if self.off.rps else float("nan")

    @property
    def median_pair_ratio(self) -> float:
        ratios = [ratio for one in self.rounds for ratio in one.pair_ratios]
        return statistics.median(ratios) if ratios else float("nan")

    @property
    def p99_ratio(self) -> float:
        off = self.off.p(0.99)
        return self.on.p(0.99) / off if off else float("nan")

    @property
    def cpu_ratio(self) -> float:
        """Off's server CPU per request over on's: the same ratio, from CPU time."""
        on = self.on.cpu_ms_per_request
        return self.off.cpu_ms_per_request / on if on else float("nan")


async def _alternate(
    servers: Mapping[str, Server],
    *,
    slices: int,
    slice_s: float,
    warmup_s: float,
    concurrency: int,
    relayed: bool = False,
) -> dict[str, Side]:
    """Warm both up, then load them in turn, `slices` slices each, in ABBA order.
    `relayed`: `/v1/chat/completions` turns (non-streamed) instead of `POST /chat`."""
    sides = {name: Side() for name in servers}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = {
        name: httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.key}"},
            limits=limits,
            timeout=10.0,
        )
        for name, server in servers.items()
    }

    async def send(client: httpx.AsyncClient, number: int) -> httpx.Response:
        message = CHAT_MESSAGES[number % len(CHAT_MESSAGES)]
        if relayed:
            return await client.post(
                "/v1/chat/completions",
                json={"model": relay.MODEL, "messages": [{"role": "user", "content": message}]},
            )
        return await client.post("/chat", json={"message": message})

    def on_error_of(side: Side) -> Callable[[str], None]:
        def on_error(message: str) -> None:
            if len(side.error_samples) < 3:
                side.error_samples.append(message)

        return on_error

    try:
        for client in clients.values():  # opens the connections, fills caches
            await phase(
                client,
                send,
                concurrency=concurrency,
                seconds=warmup_s,
                budget=Budget(1_000_000),
                latencies=None,
                on_error=None,
            )
        for index in range(slices):
            order = SIDES if index % 2 == 0 else SIDES[::-1]
            for name in order:
                side = sides[name]
                cpu_before = servers[name].cpu_seconds() or 0.0
                latencies: list[float] = []
                started = time.perf_counter()
                errors = await phase(
                    clients[name],
                    send,
                    concurrency=concurrency,
                    seconds=slice_s,
                    budget=Budget(1_000_000),
                    latencies=latencies,
                    on_error=on_error_of(side),
                )
                elapsed = time.perf_counter() - started
                side.server_cpu_s += (servers[name].cpu_seconds() or 0.0) - cpu_before
                side.requests += len(latencies) + errors
                side.errors += errors
                side.seconds += elapsed
                side.latencies_ms.extend(latencies)
                side.slice_rps.append((len(latencies) + errors) / elapsed)
    finally:
        for client in clients.values():
            await client.aclose()
    return sides


def bench_observability(
    *,
    duration_s: float,
    concurrency: int,
    rounds: int = 4,
    slice_s: float = 1.0,
    warmup_s: float = 2.0,
    cpus: CpuSplit | None = None,
    control: bool = False,
    sampler: str = "always",
    baseline: Path | None = None,
    relayed: bool = False,
) -> ObservabilityResult:
    """`rounds` times: start off and on side by side, then `duration_s` of load each.
    `sampler`: how the on side samples traces (a key of SAMPLERS).

    `baseline`: another checkout of chatlens with its own `.venv` (an earlier commit). Its
    build then takes the off side's place, with the on side's settings: the same load on
    the same settings, an earlier build against this one. `relayed`: both answer
    `/v1/chat/completions` through the openai backend, from a fake upstream of their own."""
    with ExitStack() as upstreams:
        upstream = upstreams.enter_context(relay.fake_upstream(cpus)) if relayed else None
        return _rounds(
            duration_s=duration_s,
            concurrency=concurrency,
            rounds=rounds,
            slice_s=slice_s,
            warmup_s=warmup_s,
            cpus=cpus,
            control=control,
            sampler=sampler,
            baseline=baseline,
            upstream=upstream,
        )


def _rounds(
    *,
    duration_s: float,
    concurrency: int,
    rounds: int,
    slice_s: float,
    warmup_s: float,
    cpus: CpuSplit | None,
    control: bool,
    sampler: str,
    baseline: Path | None,
    upstream: relay.Target | None,
) -> ObservabilityResult:
    # `control` runs the same method with both sides off: it should read about 100 %.
    settings = {"off": OFF, "on": OFF if control else on_settings(sampler)}
    if upstream is not None:
        backend = {
            "CHATLENS_INFERENCE_BACKEND": "openai",
            "CHATLENS_OPENAI_BASE_URL": upstream.url,
            "CHATLENS_MODEL": relay.MODEL,
        }
        settings = {name: {**given, **backend} for name, given in settings.items()}
    command = [sys.executable, "-m", "benchmarks.bench_app"]
    commands = {"off": command, "on": command}
    roots = {"off": _ROOT, "on": _ROOT}
    if baseline is not None:
        settings["off"] = settings["on"]
        commands["off"] = [str(baseline / ".venv" / "bin" / "python"), "-m", "benchmarks.bench_app"]
        roots["off"] = baseline
    slices = max(1, round(duration_s / slice_s))
    done: list[Round] = []
    for index in range(rounds):
        first = SIDES[index % 2]
        with ExitStack() as stack:
            servers: dict[str, Server] = {}
            for name in (first, SIDES[1 - index % 2]):
                # benchmarks.bench_app is imported by the server from its temp dir.
                env = {**settings[name], "PYTHONPATH": str(roots[name]), "PYTHONHASHSEED": "0"}
                servers[name] = stack.enter_context(
                    running(commands[name], env=env, setup=create_admin, cpus=cpus)
                )
            sides = asyncio.run(
                _alternate(
                    servers,
                    slices=slices,
                    slice_s=slice_s,
                    warmup_s=warmup_s,
                    concurrency=concurrency,
                    relayed=upstream is not None,
                )
            )
        done.append(Round(first=first, off=sides["off"], on=sides["on"]))
    return ObservabilityResult(
        rounds=tuple(done), slice_s=slice_s, control=control, sampler=sampler
    )
