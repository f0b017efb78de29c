"""The relay: /v1/chat/completions through chatlens (and LiteLLM) against the upstream directly.

One fast fake upstream (`benchmarks/fake_upstream.py`: 20 chunks, no delays) on 127.0.0.1.
Measured in one run, one worker each: requests/s of non-streamed completions (8 clients,
closed loop; from wrk where it is installed, else the Python load generator) and time to
the first content byte of streamed ones (one client, sequential), directly at the
upstream, through a bare relay on chatlens's HTTP stack (`benchmarks/bare_relay.py`, the
floor: nothing but the relay), through the same relay storing each turn's rows in
chatlens's SQLite schema (the cheapest relay keeping its turns there that these benchmarks
know), through `chatlens serve` (openai backend, SQLite persistence and observability on,
as a user runs it) and, when installed, through LiteLLM's proxy. Each relay's time to
first byte is read against the upstream's measured just before and just after it, so a
machine that slows down between relays does not count.

LiteLLM runs from its own virtualenv, never the project's: create it once with
`python -m venv benchmarks/.litellm && benchmarks/.litellm/bin/pip install 'litellm[proxy]'`
(or point CHATLENS_BENCH_LITELLM at a `litellm` executable). It starts offline with
`LITELLM_LOCAL_MODEL_COST_MAP=True` and a random master key.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from benchmarks.load import LoadStats, percentile, run_load
from benchmarks.server import (
    HOST,
    CpuSplit,
    bench_env,
    chatlens_command,
    create_admin,
    free_port,
    process_cpu_seconds,
    running,
)
from benchmarks.wrk import run_wrk, wrk_executable

_ROOT = Path(__file__).resolve().parents[1]
LITELLM_VENV = _ROOT / "benchmarks" / ".litellm"
MODEL = "bench-model"
BARE_FLOOR = "bare relay (floor)"
STORING_FLOOR = "bare relay, storing"
BASELINE = "chatlens, baseline"
QUESTION = [{"role": "user", "content": "Where is my order?"}]


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # the API root, ending in /v1
    headers: dict[str, str]
    pid: int


@dataclass(frozen=True)
class RelayResult:
    name: str
    load: LoadStats
    cpu_pct: float | None
    ttfb_ms: list[float]
    engine: str  # what made the load: "wrk" or "python"
    # The upstream's own, measured just before and just after this target's.
    upstream_ttfb_ms: list[float]

    @property
    def ttfb_p50(self) -> float:
        return statistics.median(self.ttfb_ms) if self.ttfb_ms else float("nan")

    @property
    def added_ttfb_ms(self) -> float:
        """What this target adds to the median time to first byte: against the upstream's
        median of the same minutes, so a machine that speeds up or slows down between
        targets does not count."""
        if not (self.ttfb_ms and self.upstream_ttfb_ms):
            return float("nan")
        return self.ttfb_p50 - statistics.median(self.upstream_ttfb_ms)

    @property
    def ttfb_p90(self) -> float:
        return percentile(sorted(self.ttfb_ms), 0.90)


def litellm_executable() -> Path | None:
    configured = os.environ.get("CHATLENS_BENCH_LITELLM")
    candidate = Path(configured) if configured else LITELLM_VENV / "bin" / "litellm"
    return candidate if candidate.is_file() else None


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited early:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            httpx.get(f"http://{HOST}:{port}/", timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(
        f"did not start in {timeout:.0f} s:\n{log.read_text(errors='replace')[-2000:]}"
    )


@contextmanager
def _process(
    command: list[str],
    port: int,
    *,
    env: dict[str, str],
    cpus: frozenset[int] | None,
    timeout: float,
) -> Iterator[int]:
    with tempfile.TemporaryDirectory(prefix="chatlens-relay-") as tmp:
        log = Path(tmp) / "out.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            if cpus is not None:
                os.sched_setaffinity(process.pid, cpus)
            _wait_for_port(process, port, log, timeout)
            yield process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@contextmanager
def fake_upstream(cpus: CpuSplit | None) -> Iterator[Target]:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.fake_upstream", "--port", str(port)]
    env = bench_env({"PYTHONPATH": str(_ROOT)})
    # The upstream shares the client's CPU: the relay being measured has the other to itself.
    with _process(command, port, env=env, cpus=cpus.client if cpus else None, timeout=30) as pid:
        yield Target("upstream directly", f"http://{HOST}:{port}/v1", {}, pid)


def _turn_database(directory: Path) -> Path:
    """A database made by chatlens's migrations, with one user (`chatlens db upgrade`,
    `chatlens users create`): where the storing floor keeps its turns, in chatlens's schema
    and indexes."""
    create_admin(directory, bench_env({}))
    return directory / "chatlens.db"


@contextmanager
def bare_relay(
    upstream: Target, cpus: CpuSplit | None, *, storing: bool = False
) -> Iterator[Target]:
    """The bare relay; `storing`: the one that also stores each turn (in a fresh database)."""
    with tempfile.TemporaryDirectory(prefix="chatlens-floor-") as tmp:
        store = ["--store", str(_turn_database(Path(tmp)))] if storing else []
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "benchmarks.bare_relay",
            "--port",
            str(port),
            "--upstream",
            upstream.url,
            *store,
        ]
        env = bench_env({"PYTHONPATH": str(_ROOT)})
        cpu = cpus.server if cpus else None
        with _process(command, port, env=env, cpus=cpu, timeout=30) as pid:
            name = STORING_FLOOR if storing else BARE_FLOOR
            yield Target(name, f"http://{HOST}:{port}/v1", {}, pid)


@contextmanager
def chatlens(
    upstream: Target, cpus: CpuSplit | None, baseline: Path | None = None
) -> Iterator[Target]:
    """chatlens relaying to `upstream`: this build, or the one of the checkout `baseline`."""
    command = (
        [str(baseline / ".venv" / "bin" / "chatlens")]
        if baseline is not None
        else chatlens_command()
    )
    env = {
        "LOG_LEVEL": "INFO",
        "CHATLENS_INFERENCE_BACKEND": "openai",
        "CHATLENS_OPENAI_BASE_URL": upstream.url,
        "CHATLENS_MODEL": MODEL,
    }
    with running([*command, "serve"], env=env, cpus=cpus) as server:
        yield Target(
            "through chatlens" if baseline is None else BASELINE,
            f"{server.url}/v1",
            {"Authorization": f"Bearer {server.key}"},
            server.pid,
        )


@contextmanager
def litellm(upstream: Target, cpus: CpuSplit | None, executable: Path) -> Iterator[Target]:
    port = free_port()
    master = f"sk-{secrets.token_hex(16)}"
    with tempfile.TemporaryDirectory(prefix="chatlens-litellm-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            "    litellm_params:\n"
            f"      model: openai/{MODEL}\n"
            f"      api_base: {upstream.url}\n"
            "      api_key: sk-upstream\n"
        )
        env = bench_env({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": master})
        command = [
            str(executable),
            "--config",
            str(config),
            "--host",
            HOST,
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]
        with _process(
            command, port, env=env, cpus=cpus.server if cpus else None, timeout=180
        ) as pid:
            yield Target(
                "through LiteLLM",
                f"http://{HOST}:{port}/v1",
                {"Authorization": f"Bearer {master}"},
                pid,
            )


async def _first_byte_ms(client: httpx.AsyncClient, body: dict[str, object]) -> float | None:
    """Milliseconds to the first content byte of one streamed completion."""
    started = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", "/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if (
                first is None
                and line.startswith("data:")
                and '"content":"' in line
                and '"content":""' not in line
            ):
                first = time.perf_counter()
    return None if first is None else (first - started) * 1000


async def _ttfb(
    target: Target, requests: int, upstream: Target | None
) -> tuple[list[float], list[float]]:
    """Time to the first content byte of streamed completions, one at a time. With
    `upstream`, half as many straight to the upstream just before and just after: its
    median of the same minutes, with nothing else running meanwhile."""
    body = {"model": MODEL, "messages": QUESTION, "stream": True}

    async def timed(base: Target, count: int) -> list[float]:
        times: list[float] = []
        async with httpx.AsyncClient(base_url=base.url, headers=base.headers, timeout=10) as c:
            for index in range(count + 5):
                took = await _first_byte_ms(c, body)
                if index >= 5 and took is not None:  # the first five warm up
                    times.append(took)
        return times

    before = await timed(upstream, requests // 2) if upstream is not None else []
    times = await timed(target, requests)
    after = await timed(upstream, requests // 2) if upstream is not None else []
    return times, before + after


def measure(
    target: Target,
    *,
    duration_s: float,
    concurrency: int,
    ttfb_requests: int,
    upstream: Target | None = None,
) -> RelayResult:
    body = {"model": MODEL, "messages": QUESTION}

    async def send(client: httpx.AsyncClient, _: int) -> httpx.Response:
        return await client.post("/chat/completions", json=body)

    engine = "wrk" if wrk_executable() is not None else "python"
    cpu_before = process_cpu_seconds(target.pid)
    started = time.perf_counter()
    if engine == "wrk":
        load = run_wrk(
            f"{target.url}/chat/completions",
            body=json.dumps(body),
            headers=target.headers,
            duration_s=duration_s,
            concurrency=concurrency,
        )
    else:
        load = asyncio.run(
            run_load(
                send,
                base_url=target.url,
                headers=target.headers,
                duration_s=duration_s,
                concurrency=concurrency,
            )
        )
    wall = time.perf_counter() - started
    cpu_after = process_cpu_seconds(target.pid)
    cpu = (
        None
        if cpu_before is None or cpu_after is None
        else round(100 * (cpu_after - cpu_before) / wall, 1)
    )
    ttfb, upstream_ttfb = asyncio.run(_ttfb(target, ttfb_requests, upstream))
    return RelayResult(target.name, load, cpu, ttfb, engine, upstream_ttfb)


def bench_relay(
    *,
    duration_s: float,
    concurrency: int,
    cpus: CpuSplit | None,
    ttfb_requests: int = 200,
    baseline: Path | None = None,
) -> list[RelayResult]:
    """The upstream alone, then each relay in turn; `baseline`: an earlier checkout's
    chatlens too, measured right after this build's."""
    with fake_upstream(cpus) as upstream:

        def measured(target: Target, against: Target | None = upstream) -> RelayResult:
            return measure(
                target,
                duration_s=duration_s,
                concurrency=concurrency,
                ttfb_requests=ttfb_requests,
                upstream=against,
            )

        # The upstream directly: pinned alone on the server CPU for this part.
        if cpus is not None:
            os.sched_setaffinity(upstream.pid, cpus.server)
        results = [measured(upstream, None)]
        if cpus is not None:
            os.sched_setaffinity(upstream.pid, cpus.client)
        relays = [
            partial(bare_relay, upstream, cpus),
            partial(bare_relay, upstream, cpus, storing=True),
            partial(chatlens, upstream, cpus),
        ]
        if baseline is not None:
            relays.append(partial(chatlens, upstream, cpus, baseline))
        executable = litellm_executable()
        if executable is not None:
            relays.append(partial(litellm, upstream, cpus, executable))
        for relay in relays:
            with relay() as target:
                results.append(measured(target))
    return results
