"""SIGTERM to a real `chatlens serve` while answers stream: readiness 503 at once, answers
that finish within the grace period finish, the rest end with an error event and are stored;
the same with several workers when every process of the group is signalled."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from chatlens.shutdown import Shutdown, draining_on_signals
from tests.helpers import Server, parse_sse
from tests.upstream import WORDS, FakeUpstream

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")
GRACE_S = 6  # answers still running 4.5 s after SIGTERM are cut (the last 1.5 s: to store)
SLOW = "slow-words:20"  # a word now, the next in 20 s: still answering when the grace ends
FAST = "slow-words:1.5"  # the whole answer 3 s after its first word: within the grace
QUESTION = [{"role": "user", "content": "where is my order?"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.02)


class Stream(threading.Thread):
    """One streamed answer read in a thread: `started` once its first word is in."""

    def __init__(self, read: Callable[[Stream], None]) -> None:
        super().__init__(daemon=True)
        self.read = read
        self.started = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            self.read(self)
        except BaseException as exc:  # the SDK's error is what a test may expect
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.started.set()


def _chat_sse(server: Server, headers: dict[str, str]) -> Callable[[Stream], None]:
    def read(stream: Stream) -> None:
        body = b""
        with httpx.stream(
            "POST",
            f"{server.url}/chat",
            json={"message": "where is my order?", "stream": True},
            headers=headers,
            timeout=60,
        ) as response:
            for chunk in response.iter_bytes():
                body += chunk
                if b"event: delta" in body:
                    stream.started.set()
        stream.result = parse_sse(body.decode())

    return read


def _v1_raw(server: Server, headers: dict[str, str], model: str) -> Callable[[Stream], None]:
    def read(stream: Stream) -> None:
        lines: list[str] = []
        with httpx.stream(
            "POST",
            f"{server.url}/v1/chat/completions",
            json={"model": model, "messages": QUESTION, "stream": True},
            headers=headers,
            timeout=60,
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    lines.append(line[5:].strip())
                    if '"content":"Hello"' in line:
                        stream.started.set()
        stream.result = lines

    return read


def _v1_sdk(server: Server, key: str, model: str) -> Callable[[Stream], None]:
    def read(stream: Stream) -> None:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        text = ""
        for chunk in client.chat.completions.create(
            model=model,
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                stream.started.set()
        stream.result = text

    return read


def _answers(database: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT status, content FROM messages WHERE role = 'assistant' ORDER BY content"
        ).fetchall()
    return [(str(status), str(content)) for status, content in rows]


def test_sigterm_drains_answers_then_cuts_the_rest_with_an_error_and_stores_them(
    tmp_path: Path, env_without_chatlens: dict[str, str], upstream: FakeUpstream
) -> None:
    env = {
        **env_without_chatlens,
        "CHATLENS_INFERENCE_BACKEND": "openai",
        "CHATLENS_OPENAI_BASE_URL": upstream.url,
        "CHATLENS_OPENAI_API_KEY": "sk-upstream",
        "CHATLENS_MODEL": SLOW,  # what /chat answers with
        "CHATLENS_SHUTDOWN_GRACE_SECONDS": str(GRACE_S),
        "CHATLENS_UPSTREAM_TIMEOUT_SECONDS": "120",
    }
    server = Server(tmp_path, env)
    try:
        key = KEY.findall(server.output)[0]
        headers = {"Authorization": f"Bearer {key}"}
        streams = {
            "chat-slow": Stream(_chat_sse(server, headers)),
            "v1-slow-sdk": Stream(_v1_sdk(server, key, SLOW)),
            "v1-fast": Stream(_v1_raw(server, headers, FAST)),
            "v1-fast-sdk": Stream(_v1_sdk(server, key, FAST)),
        }
        for stream in streams.values():
            stream.start()
        for name, stream in streams.items():
            assert stream.started.wait(30), f"{name}: no first word"
            assert stream.ended_at is None, f"{name} ended early: {stream.error!r}"

        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        # At once: not ready, and a new turn is refused with a reason; the listener stays.
        _until(
            lambda: httpx.get(f"{server.url}/health/ready", timeout=2).status_code == 503,
            2,
            "readiness 503",
        )
        ready = httpx.get(f"{server.url}/health/ready", timeout=2).json()
        assert ready == {"status": "not_ready", "reason": "shutting_down"}
        refused = httpx.post(
            f"{server.url}/chat", json={"message": "hello?"}, headers=headers, timeout=5
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["type"] == "shutting_down"
        assert "retry-after" in refused.headers

        for stream in streams.values():
            stream.join(GRACE_S + 10)
            assert not stream.is_alive()
        assert server.process.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=15)

    # Finished within the grace period: the whole answer, its finish reason and [DONE].
    fast = streams["v1-fast"].result
    assert fast[-1] == "[DONE]", fast
    chunks = [orjson.loads(line) for line in fast[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "".join(WORDS)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert streams["v1-fast-sdk"].error is None
    assert streams["v1-fast-sdk"].result == "".join(WORDS)

    # Still answering when the grace ended: cut then, not at the signal, with an error.
    for name in ("chat-slow", "v1-slow-sdk"):
        ended_at = streams[name].ended_at
        assert ended_at is not None and ended_at - sent >= GRACE_S * 0.75 - 0.5, name
    events = streams["chat-slow"].result
    assert [name for name, _ in events] == ["delta", "error"], events
    assert events[-1][1]["type"] == "shutting_down"
    # The openai SDK raises: the client never takes half an answer for a whole one.
    assert isinstance(streams["v1-slow-sdk"].error, openai.APIError)

    # All four are stored: two complete, the two cut off as incomplete with their words.
    assert sorted(status for status, _ in _answers(tmp_path / "chatlens.db")) == [
        "complete",
        "complete",
        "incomplete",
        "incomplete",
    ]
    assert {content for status, content in _answers(tmp_path / "chatlens.db")} == {
        "".join(WORDS),
        WORDS[0],
    }
    log = server.output
    assert '"event":"answers_interrupted"' in log
    assert '"event":"shutdown_drained"' in log


def test_sigterm_to_every_worker_and_again_from_the_supervisor_still_drains(
    tmp_path: Path, env_without_chatlens: dict[str, str], upstream: FakeUpstream
) -> None:
    # systemd's stop, Ctrl+C in a terminal, `tini -g`: each worker gets the signal, then
    # SIGTERM once more from uvicorn's supervisor. The second one must not cut the drain.
    env = {
        **env_without_chatlens,
        "CHATLENS_INFERENCE_BACKEND": "openai",
        "CHATLENS_OPENAI_BASE_URL": upstream.url,
        "CHATLENS_OPENAI_API_KEY": "sk-upstream",
        # Whole 3.8 s after its first word: past uvicorn's own 3 s wait, within the drain.
        "CHATLENS_MODEL": "slow-words:1.9",
        "CHATLENS_SHUTDOWN_GRACE_SECONDS": str(GRACE_S),
        "CHATLENS_UPSTREAM_TIMEOUT_SECONDS": "120",
    }
    server = Server(tmp_path, env, "--workers", "2", new_session=True)
    try:
        key = KEY.findall(server.output)[0]
        headers = {"Authorization": f"Bearer {key}"}
        fast = Stream(_chat_sse(server, headers))
        slow = Stream(_v1_raw(server, headers, SLOW))
        for stream in (fast, slow):
            stream.start()
            assert stream.started.wait(30), f"no first word: {stream.error!r}"
        assert fast.ended_at is None and slow.ended_at is None, (fast.error, slow.error)

        sent = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        for stream in (fast, slow):
            stream.join(GRACE_S + 10)
            assert not stream.is_alive()
        assert server.process.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        if server.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=15)

    # Finished within the grace period: every word, then `done`.
    assert fast.error is None, fast.error
    events = fast.result
    assert [name for name, _ in events][-1] == "done", events
    assert "".join(data["content"] for name, data in events if name == "delta") == "".join(WORDS)
    # Cut when the grace ended, not when the supervisor repeated the signal: an error event.
    assert slow.error is None, slow.error
    assert slow.ended_at is not None and slow.ended_at - sent >= GRACE_S * 0.75 - 0.5
    assert orjson.loads(slow.result[-1])["error"]["code"] == "shutting_down", slow.result
    assert sorted(_answers(tmp_path / "chatlens.db")) == [
        ("complete", "".join(WORDS)),
        ("incomplete", WORDS[0]),
    ]
    assert '"event":"answers_interrupted"' in server.output


class Answer:
    """An answer in progress that leaves the drain once it is cut, as a stored turn does."""

    def __init__(self, shutdown: Shutdown) -> None:
        self.shutdown = shutdown
        self.cut = False
        shutdown.enter(self)

    def interrupt(self) -> None:
        self.cut = True
        self.shutdown.leave(self)


async def test_while_draining_sigterm_changes_nothing_and_ctrl_c_cuts_then_stops() -> None:
    reached: list[int] = []  # what the server's own handler (uvicorn's) was given
    handed_over = asyncio.Event()

    def server_handler(signum: int, frame: object) -> None:
        reached.append(signum)
        handed_over.set()

    async def deliver(signum: int) -> None:
        signal.raise_signal(signum)  # the handler runs before this returns; it queues the rest
        await asyncio.sleep(0)

    saved = {sig: signal.signal(sig, server_handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        shutdown = Shutdown(grace_s=60)
        answer = Answer(shutdown)
        async with draining_on_signals(shutdown):
            # Ctrl+C in a terminal: SIGINT from it, SIGTERM from uvicorn's supervisor, then
            # SIGTERM from systemd's stop too. The drain goes on.
            signal.raise_signal(signal.SIGINT)
            await deliver(signal.SIGTERM)
            await deliver(signal.SIGTERM)
            assert shutdown.draining and not answer.cut and reached == []
            await deliver(signal.SIGINT)  # Ctrl+C again: cut now, told and stored, then stop
            await asyncio.wait_for(handed_over.wait(), 5)
            assert answer.cut and reached == [signal.SIGINT]
            await deliver(signal.SIGINT)  # and again: straight to the server's handler
            assert reached == [signal.SIGINT, signal.SIGINT]
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
