"""What observability costs in CPU instructions per POST /chat, counted by valgrind.

Requests per second on a shared virtual machine drift by several per cent between identical
runs; instruction counts do not (the same build counted twice differs by under 0.2 %). This
counts the instructions one POST /chat costs with observability off and on (at the
production default of 10 % of traces sampled, and at 100 %), in-process
(the app driven through httpx's ASGI transport, JSON logs at INFO to a file), with
`valgrind --tool=callgrind`: each side runs twice, with 1 and with 1 + N counted requests
after the same warm-up, and the difference over N is the cost of a request.

It counts work, not time: cache misses, thread switches and the kernel are not in it, so
its ratio reads a few points higher than the requests/s ratio of the observability run.

Then, the same way, a non-streamed POST /v1/chat/completions relayed to the relay
benchmark's fake upstream (a process of its own, not counted), observability on: the
relay's cost per turn, repeatable where its requests/s drift.

    .venv/bin/python -m benchmarks.instructions [--requests 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.observability import OFF, ON, SAMPLER_LABELS, on_settings
from benchmarks.server import bench_env
from chatlens import state
from chatlens.db.session import Database

_ROOT = Path(__file__).resolve().parents[1]
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")
WARMUP_REQUESTS = 30
# The service's periodic tasks (the active model every 5 s, request counts every 15 s,
# active_sessions every 30 s) run by the clock, and under valgrind a second holds one or two
# requests, not a hundred: left on, they would be charged to the requests fifty times over,
# and by how long each run happened to take. Their cost per request in real time is counted
# by the observability run.
_QUIET_TIMERS = {
    "CHATLENS_ACTIVE_MODEL_REFRESH_SECONDS": "3600",
    "CHATLENS_REQUEST_STATS_FLUSH_SECONDS": "3600",
    "CHATLENS_ACTIVE_SESSIONS_REFRESH_SECONDS": "3600",
}


async def _drive(requests: int, warmup: int, relay: bool) -> None:
    """Inside valgrind: migrate, create a key, warm up, then `requests` POST /chat (or,
    with `relay`, POST /v1/chat/completions to the configured upstream)."""
    import httpx

    from benchmarks.bench_app import create_app
    from benchmarks.relay import MODEL, QUESTION
    from benchmarks.workloads import CHAT_MESSAGES
    from chatlens.auth import service as auth

    app = create_app()
    async with app.router.lifespan_context(app):
        async with state.of(app).get(Database).sessionmaker() as session:
            secret = await auth.bootstrap_admin(session)
            await session.commit()
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:
            for number in range(warmup + requests):
                if relay:
                    body = {"model": MODEL, "messages": QUESTION}
                    response = await client.post("/v1/chat/completions", json=body)
                else:
                    message = CHAT_MESSAGES[number % len(CHAT_MESSAGES)]
                    response = await client.post("/chat", json={"message": message})
                response.raise_for_status()


def _count(settings: dict[str, str], requests: int, relay: bool) -> int:
    """Instructions of one whole process run (start-up, warm-up and `requests`)."""
    with tempfile.TemporaryDirectory(prefix="chatlens-instructions-") as tmp:
        env = bench_env(
            {
                **settings,
                "CHATLENS_AUTO_MIGRATE": "true",
                **_QUIET_TIMERS,
                "PYTHONPATH": str(_ROOT),
                "PYTHONHASHSEED": "0",
            }
        )
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/callgrind.out",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--drive",
            str(requests),
            *(["--relay"] if relay else []),
        ]
        with (Path(tmp) / "app.log").open("wb") as log:
            done = subprocess.run(
                command,
                cwd=tmp,
                env=env,
                stdout=log,
                stderr=subprocess.PIPE,
                timeout=1800,
                check=False,
            )
        stderr = done.stderr.decode(errors="replace")
        match = _REFS.search(stderr)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"valgrind run failed ({done.returncode}): {stderr[-2000:]}")
        return int(match.group(1).replace(",", ""))


def per_request(settings: dict[str, str], requests: int, *, relay: bool = False) -> float:
    """Instructions one request costs: (run with 1 + N) - (run with 1), over N."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        small = pool.submit(_count, settings, 1, relay)
        large = pool.submit(_count, settings, 1 + requests, relay)
        return (large.result() - small.result()) / requests


def per_relayed_turn(requests: int) -> float:
    """A non-streamed /v1/chat/completions turn relayed to the relay benchmark's fake
    upstream (run outside valgrind), observability on: the relay's cost, repeatably."""
    from benchmarks.relay import MODEL, fake_upstream

    with fake_upstream(None) as upstream:
        settings = {
            **ON,
            "CHATLENS_INFERENCE_BACKEND": "openai",
            "CHATLENS_OPENAI_BASE_URL": upstream.url,
            "CHATLENS_MODEL": MODEL,
        }
        return per_request(settings, requests, relay=True)


def parts() -> dict[str, dict[str, str]]:
    """Each part of observability alone, the rest off: what each costs a request."""
    return {
        "access log alone": {**OFF, "CHATLENS_ACCESS_LOG": "true"},
        "metrics alone": {**OFF, "CHATLENS_METRICS_ENABLED": "true"},
        **{
            f"tracing alone, {SAMPLER_LABELS[sampler]}": {
                **OFF,
                **{k: v for k, v in on_settings(sampler).items() if k.startswith("OTEL_")},
                "CHATLENS_TRACING_ENABLED": "true",
            }
            for sampler in ("ratio", "always")
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--requests", type=int, default=60, help="counted requests (60)")
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also count each part alone (access log, metrics, tracing at 10 %% and 100 %%)",
    )
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)  # inside valgrind
    parser.add_argument("--relay", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive is not None:
        asyncio.run(_drive(args.drive, WARMUP_REQUESTS, args.relay))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian package valgrind): nothing counted")
        return 0
    if args.requests < 1:
        parser.error("--requests must be positive")
    print(
        f"== instructions: POST /chat in-process under callgrind, {WARMUP_REQUESTS} warm-up "
        f"requests, {args.requests} counted, observability off, then on at 10 % and at "
        "100 % trace sampling; then a relayed /v1/chat/completions turn (100 %)"
    )
    off = per_request(dict(OFF), args.requests)
    print(f"  off: {off / 1e6:.2f} M instructions per request")
    for sampler in ("ratio", "always"):
        on = per_request(on_settings(sampler), args.requests)
        print(
            f"  on, {SAMPLER_LABELS[sampler]}: {on / 1e6:.2f} M instructions per request "
            f"(+{(on - off) / 1e6:.2f} M): {100 * off / on:.1f} % of off's requests per "
            "instruction"
        )
    if args.parts:
        for name, settings in parts().items():
            part = per_request(settings, args.requests)
            print(f"  {name}: +{(part - off) / 1e6:.2f} M instructions per request")
    relayed = per_relayed_turn(args.requests)
    print(
        f"  a relayed POST /v1/chat/completions turn (fake upstream, observability on): "
        f"{relayed / 1e6:.2f} M instructions"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
