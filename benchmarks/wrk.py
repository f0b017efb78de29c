"""Load from wrk (Debian's `wrk` package), where it is installed: a client in C.

The Python load generator (`benchmarks/load.py`) tops out near a thousand requests/s on
this machine's client CPU, below what a fast upstream serves; wrk does not, so the relay's
figures are the servers', not the client's. Same closed loop: N keep-alive connections,
each sending its next request when the last is answered, a warm-up run first.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from benchmarks.load import LoadStats

_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d errors=%d p50=%d p90=%d p99=%d\\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""
_RESULT = re.compile(
    r"WRK requests=(\d+) duration_us=(\d+) errors=(\d+) p50=(\d+) p90=(\d+) p99=(\d+)"
)


def wrk_executable() -> str | None:
    return shutil.which("wrk")


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(
    url: str,
    *,
    body: str,
    headers: Mapping[str, str],
    duration_s: float,
    concurrency: int,
    warmup_s: float = 1.0,
) -> LoadStats:
    """POST `body` to `url` for `duration_s` from `concurrency` connections (after a warm-up).

    Errors are wrk's: connect, read, write, timeout and non-2xx/3xx answers; latency
    percentiles are over every answered request.
    """
    executable = wrk_executable()
    if executable is None:
        raise RuntimeError("wrk is not installed")
    lines = [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    with tempfile.TemporaryDirectory(prefix="chatlens-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_SCRIPT.format(body=body, headers="\n".join(lines)))

        def run(seconds: float) -> str:
            command = [
                executable,
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                url,
            ]
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=seconds + 60, check=True
            )
            return done.stdout

        run(warmup_s)
        output = run(duration_s)
    found = _RESULT.search(output)
    if found is None:
        raise RuntimeError(f"unexpected wrk output:\n{output[-2000:]}")
    requests, duration_us, errors, p50, p90, p99 = (int(x) for x in found.groups())
    duration = duration_us / 1e6
    return LoadStats(
        requests=requests,
        errors=errors,
        duration_s=round(duration, 3),
        rps=round(requests / duration, 1) if duration > 0 else 0.0,
        p50_ms=round(p50 / 1000, 2),
        p90_ms=round(p90 / 1000, 2),
        p99_ms=round(p99 / 1000, 2),
    )
