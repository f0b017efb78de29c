"""Live gauges of worker processes that died without saying so (SIGKILL, out of memory).

A worker that stops normally marks itself dead (chatlens.app); one that is killed cannot,
and uvicorn's supervisor, which starts its replacement, offers no hook. So the scrape
does it: every worker process whose live-gauge files are in the shared directory and
that no longer exists is marked dead, as prometheus_client documents, before the
files are read. Its counters and histograms stay: what it counted did happen.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import multiprocess

# prometheus_client's file names for gauges that count only live processes.
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: the pid was reused, it is not ours
        return False
    return True


def forget_dead_workers(directory: str) -> list[int]:
    """Mark every dead worker's live gauges dead; the pids it marked."""
    pids = {
        int(match.group(1))
        for path in Path(directory).glob("gauge_live*.db")
        if (match := _LIVE_GAUGE_FILE.fullmatch(path.name))
    }
    dead = sorted(pid for pid in pids if not _alive(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return dead
