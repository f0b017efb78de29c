"""Background loops: a job run every few seconds for as long as the application serves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager


@asynccontextmanager
async def every(
    interval_s: float, job: Callable[[], Awaitable[None]], *, now: bool = False
) -> AsyncIterator[None]:
    """Run `job` every `interval_s` seconds (first at once with `now`) until the block exits.

    A job handles its own errors (and logs them): one that raises ends its loop.
    """

    async def loop() -> None:
        if now:
            await job()
        while True:
            await asyncio.sleep(interval_s)
            await job()

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
