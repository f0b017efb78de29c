"""`chatlens serve --workers 2`: a killed worker's live gauges end with it; no folder is left."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx

from tests.helpers import Server

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")
IN_PROGRESS = re.compile(r'^http_requests_in_progress\{method="POST",route="/chat"\} (\S+)$', re.M)


def workers_of(server: Server) -> list[int]:
    """The pids of the serving worker processes (children that opened the listening port)."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split() if sockets_of(int(pid))]


def sockets_of(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return inodes


def server_socket_inode(server_port: int, client_port: int) -> str:
    """The inode of the server's end of the connection from client_port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            return fields[9]
    raise AssertionError("no such connection")


def in_progress(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    match = IN_PROGRESS.search(text)
    return float(match.group(1)) if match else 0.0


def wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {seconds} s")


def test_a_killed_worker_stops_counting_and_the_metrics_folder_goes_with_serve(
    tmp_path: Path, env_without_chatlens: dict[str, str]
) -> None:
    env = {
        **env_without_chatlens,
        "TMPDIR": str(tmp_path),
        "CHATLENS_BUILTIN_STREAM_DELAY_MS": "250",
        "CHATLENS_ACCESS_LOG": "false",
    }
    server = Server(tmp_path, env, "--workers", "2")
    try:
        [folder] = tmp_path.glob("chatlens-metrics-*")
        key = KEY.findall(server.output)[0]
        wait_for(lambda: len(workers_of(server)) == 2, 60, "two workers")

        # A streamed answer takes seconds: the request is in progress on one worker.
        client = httpx.Client(base_url=server.url, timeout=30)
        stream = client.stream(
            "POST",
            "/chat",
            json={"message": "Where is my order?", "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        )
        response = stream.__enter__()
        assert response.status_code == 200
        wait_for(lambda: in_progress(server) == 1, 10, "the stream counted")

        # Which worker holds it: the one with the server's end of this connection.
        client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
        inode = server_socket_inode(server.port, client_port)
        [busy] = [pid for pid in workers_of(server) if inode in sockets_of(pid)]
        os.kill(busy, signal.SIGKILL)
        try:
            for _ in response.iter_lines():
                pass
        except httpx.HTTPError:
            pass  # the worker died mid-answer
        finally:
            stream.__exit__(None, None, None)
            client.close()

        wait_for(
            lambda: busy not in workers_of(server) and len(workers_of(server)) == 2,
            60,
            "the killed worker replaced",
        )
        # The dead worker's request is no longer in progress, whichever worker answers.
        for _ in range(4):
            assert in_progress(server) == 0
        assert folder.is_dir()
    finally:
        code = server.stop()
    assert code == 0, server.output
    assert not folder.exists()
