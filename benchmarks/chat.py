"""POST /chat (non-streamed) against `chatlens serve`: one uvicorn worker, SQLite."""

from __future__ import annotations

import asyncio
import sys

from benchmarks.load import LoadResult, run_load
from benchmarks.server import running
from benchmarks.workloads import chat_request


def bench_chat(*, duration_s: float, concurrency: int) -> LoadResult:
    command = [sys.executable, "-m", "chatlens.cli", "serve"]
    with running(command, {}) as server:
        return asyncio.run(
            run_load(
                f"{server.url}/chat",
                chat_request(server.key),
                duration_s=duration_s,
                concurrency=concurrency,
            )
        )
