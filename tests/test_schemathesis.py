"""schemathesis against `chatlens serve`: every check, as an admin and without a key.

The service answers as its OpenAPI description says, whatever a client sends: no server
error, no status, content type, header or body the description does not promise, nothing
invalid accepted, nothing valid refused (tests/schemathesis.toml lists the few rules a
schema cannot state). Bounded in time: CI runs it, on two cores, in about two minutes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import Server

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")


def _schemathesis(
    server: Server, cwd: Path, who: str, *args: str, budget_s: int
) -> tuple[str, int]:
    """One `st run` over the whole description; its output and the test cases it ran."""
    started = time.monotonic()
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [
            str(st),
            "--config-file",
            str(CONFIG),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            # One worker: CPython 3.11's ast.parse is not thread-safe, and hypothesis calls
            # it while describing strategies ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--max-time",
            str(budget_s),
            "--request-timeout",
            "10",
            "--output-truncate",
            "true",
            *args,
        ],
        cwd=cwd,  # its cache folder stays out of the checkout
        capture_output=True,
        text=True,
        timeout=budget_s + 120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20_000:]
    cases = re.search(r"(\d+) generated", output)
    assert cases is not None, output[-5_000:]
    took = time.monotonic() - started
    print(f"schemathesis {who}: {cases.group(1)} cases in {took:.0f} s")
    return output, int(cases.group(1))


def test_the_service_answers_as_its_description_says(
    tmp_path: Path, env_without_chatlens: dict[str, str]
) -> None:
    env = {
        **env_without_chatlens,
        "CHATLENS_BUILTIN_STREAM_DELAY_MS": "0",
        # A profile lasts as long as asked (up to two minutes): off, its route does not exist.
        "CHATLENS_PROFILING_ENABLED": "false",
    }
    server = Server(tmp_path, env)
    try:
        key = KEY.findall(server.output)[0]  # the admin key printed on first start
        admin = ("--header", f"Authorization: Bearer {key}")
        _, as_admin = _schemathesis(
            server, tmp_path, "as admin", *admin, "--max-examples", "25", budget_s=75
        )
        _, without_key = _schemathesis(
            server, tmp_path, "without a key", "--max-examples", "10", budget_s=30
        )
        assert as_admin > 1000 and without_key > 100
        assert "Traceback" not in server.output
    finally:
        server.stop()
