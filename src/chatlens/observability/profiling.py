"""Profiling on demand with pyinstrument: the worker's event loop for N seconds, or one request.

pyinstrument hooks the thread it profiles, so a worker runs one profile at a time; nothing
is hooked while none runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal

from pyinstrument import Profiler
from pyinstrument.renderers import SpeedscopeRenderer

ProfileFormat = Literal["html", "speedscope"]
FORMATS: tuple[ProfileFormat, ...] = ("html", "speedscope")

# A profile is a page of its own: its inline script runs, sandboxed, and loads nothing.
_HTML_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; sandbox allow-scripts"
)
MEDIA_TYPES: dict[ProfileFormat, str] = {
    "html": "text/html; charset=utf-8",
    "speedscope": "application/json",
}


class ProfilerBusy(RuntimeError):
    """Another profile is running in this worker."""


class Profiling:
    """One profile at a time in this worker, sampled every `interval_s` seconds."""

    def __init__(self, *, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self.started = asyncio.Event()  # set while a profile runs

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @asynccontextmanager
    async def running(self, *, whole_loop: bool) -> AsyncIterator[Profiler]:
        """Profile while the block runs: every task of the event loop (`whole_loop`), or
        only the task that enters the block and what it awaits."""
        if self._lock.locked():
            raise ProfilerBusy("a profile is already running in this worker")
        async with self._lock:
            profiler = Profiler(
                interval=self.interval_s, async_mode="disabled" if whole_loop else "enabled"
            )
            profiler.start()
            self.started.set()
            try:
                yield profiler
            finally:
                self.started.clear()
                profiler.stop()

    async def sample(
        self,
        seconds: float,
        *,
        wait: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> Profiler:
        """The event loop's profile over `seconds`: every request this worker serves meanwhile."""
        async with self.running(whole_loop=True) as profiler:
            await wait(seconds)
        return profiler


def render(profiler: Profiler, fmt: ProfileFormat) -> tuple[str, dict[str, str]]:
    """The profile as a document, with the headers it is served with."""
    headers = {"Content-Type": MEDIA_TYPES[fmt], "Cache-Control": "no-store"}
    if fmt == "html":
        headers["Content-Security-Policy"] = _HTML_POLICY
        return profiler.output_html(), headers
    # Every sampled frame: speedscope zooms in itself, so short calls must not be dropped.
    renderer = SpeedscopeRenderer(processor_options={"filter_threshold": 0})
    return profiler.output(renderer=renderer), headers
