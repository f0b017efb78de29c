"""A graceful stop: on SIGTERM the service drains before the server stops.

Readiness turns 503 at once and new turns are refused (503, `shutting_down`) while the
listener stays open, so a load balancer sees the change; answers in progress get the grace
period (`CHATLENS_SHUTDOWN_GRACE_SECONDS`) to finish; those still running at its end are cut
with an error their clients are told and stored. Only then is the server's own handler
called (uvicorn's, which stops listening and waits for what is left).

A SIGTERM that comes again while draining changes nothing: process managers repeat it
(systemd and `tini -g` signal every process, then uvicorn's supervisor sends each worker
SIGTERM again), and the drain has its own deadline. Ctrl+C during the drain cuts the answers
still running at once (told and stored as at the end of the grace period); Ctrl+C once more
stops the server without waiting.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)

# Of the grace period, the last seconds are for cut answers to be told and stored.
STORE_MARGIN_S = 3
_POLL_S = 0.05
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interruptible(Protocol):
    """An answer in progress that a shutdown can cut short."""

    def interrupt(self) -> None: ...


class Shutdown:
    """Whether the service is draining, and the answers in progress it waits for."""

    def __init__(self, grace_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self.draining = False
        self.cut_short = False
        self._clock = clock
        # Weak: an answer whose response was dropped unstarted does not hold the drain up.
        self._answers: weakref.WeakSet[Interruptible] = weakref.WeakSet()

    @property
    def margin_s(self) -> float:
        return min(STORE_MARGIN_S, self.grace_s / 4)

    def enter(self, answer: Interruptible) -> None:
        self._answers.add(answer)

    def leave(self, answer: Interruptible) -> None:
        self._answers.discard(answer)

    @property
    def in_progress(self) -> int:
        return len(self._answers)

    def cut(self) -> None:
        """Stop waiting: the drain cuts the answers still running now, and still stores them."""
        self.cut_short = True

    async def drain(self) -> None:
        """Stop taking turns; wait for the answers in progress until the grace period ends
        (less the margin) or `cut` is called, then cut the rest and give them the margin to
        be stored."""
        self.draining = True
        started = self._clock()
        log.info("shutdown_started", grace_seconds=self.grace_s, answers=self.in_progress)
        await self._until_idle(started + self.grace_s - self.margin_s, until_cut=True)
        cut = list(self._answers)
        for answer in cut:
            answer.interrupt()
        if cut:
            log.warning("answers_interrupted", answers=len(cut))
            await self._until_idle(min(started + self.grace_s, self._clock() + self.margin_s))
        log.info(
            "shutdown_drained",
            seconds=round(self._clock() - started, 3),
            interrupted=len(cut),
            left=self.in_progress,
        )

    async def _until_idle(self, deadline: float, *, until_cut: bool = False) -> None:
        # Polled: a weak set has no event to wait on.
        while self._answers and self._clock() < deadline:
            if until_cut and self.cut_short:
                return
            await asyncio.sleep(_POLL_S)


@asynccontextmanager
async def draining_on_signals(shutdown: Shutdown) -> AsyncIterator[None]:
    """While the block runs, SIGTERM and SIGINT start the drain and reach the server's own
    handler after it. While draining, SIGTERM is ignored; SIGINT cuts the answers at once,
    and a SIGINT after that reaches the server's handler at once. Only where a server
    handles the signals (uvicorn does, in the main thread): elsewhere, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def drain_then(signum: int) -> None:
        try:
            await shutdown.drain()
        finally:
            previous[signum](signum, None)

    def start(signum: int) -> None:
        # `tasks` too: two signals may be queued before the drain's task first runs.
        if not (shutdown.draining or tasks):
            task = loop.create_task(drain_then(signum))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif signum != signal.SIGINT:
            # A process manager repeating itself: the drain keeps its deadline.
            log.info("shutdown_signal_repeated", signal=signal.Signals(signum).name)
        elif tasks and not shutdown.cut_short:
            log.warning("shutdown_cut_short", signal=signal.Signals(signum).name)
            shutdown.cut()  # Ctrl+C again: cut the answers now, still telling and storing
        else:
            previous[signum](signum, None)  # and again: stop now

    def handle(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(start, signum)

    for sig in _SIGNALS:
        signum = int(sig)
        current = signal.getsignal(signum)
        # A server's handler: not the default, ignore, nor Python's KeyboardInterrupt.
        if callable(current) and current is not signal.default_int_handler:
            previous[signum] = current
            signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if signal.getsignal(signum) is handle:
                signal.signal(signum, handler)
