"""The openai backend against a real HTTP server on 127.0.0.1 playing the upstream."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace

import pytest

from chatlens.inference.base import ChatMessage, Chunk
from chatlens.inference.breaker import BreakerState
from chatlens.inference.errors import (
    UpstreamBadResponse,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatlens.inference.knowledge_base import default_knowledge_base_path, load_knowledge_base
from chatlens.inference.upstream import OpenAIBackend, UpstreamConfig
from chatlens.inference.upstream_wire import MAX_LINE_BYTES
from tests.helpers import ManualClock, free_port
from tests.upstream import WORDS, FakeUpstream

pytestmark = pytest.mark.asyncio

QUESTION = [ChatMessage(role="user", content="where is my order?")]
KB = load_knowledge_base(default_knowledge_base_path())


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream: FakeUpstream) -> None:
    upstream.reset()


def make_backend(
    url: str, *, clock: ManualClock | None = None, **overrides: object
) -> OpenAIBackend:
    config = UpstreamConfig(base_url=url, api_key="sk-test-key", default_model="ok")
    return OpenAIBackend(
        replace(config, **overrides),  # type: ignore[arg-type]
        knowledge_base=KB,
        clock=clock or ManualClock(),
    )


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until `condition` holds, for at most `timeout_s`. The fake upstream serves from
    a thread of its own, so what it records is polled: no asyncio.Event crosses loops."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def collect(backend: OpenAIBackend, model: str) -> list[Chunk]:
    return [chunk async for chunk in backend.stream(QUESTION, model=model)]


async def test_what_follows_done_cannot_fail_a_finished_answer(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url)
    try:
        chunks = await collect(backend, "junk-after-done")  # 4 MiB without a newline
    finally:
        await backend.aclose()
    assert "".join(c.delta for c in chunks) == "".join(WORDS)
    assert chunks[-1].finish_reason == "stop"


async def test_streams_words_then_the_upstreams_usage(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url)
    try:
        chunks = await collect(backend, "ok")
    finally:
        await backend.aclose()
    assert "".join(c.delta for c in chunks) == "".join(WORDS)
    final = chunks[-1]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (11, 3)
    assert final.usage.cached_prompt_tokens == 4  # USAGE.prompt_tokens_details.cached_tokens
    assert not final.usage.estimated
    assert final.finish_reason == "stop"
    assert final.intent == "order_status"  # from the builtin matcher, whatever the model
    [call] = upstream.calls
    assert call.body["stream_options"] == {"include_usage": True}
    assert call.headers["authorization"] == "Bearer sk-test-key"


async def test_the_upstream_connection_is_reused(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url)
    try:
        for _ in range(3):
            await collect(backend, "ok")
    finally:
        await backend.aclose()
    # Each stream is read to its end, so its connection goes back to the pool.
    assert len({call.client_port for call in upstream.calls}) == 1


async def test_without_a_usage_chunk_tokens_are_counted_and_marked(
    upstream: FakeUpstream,
) -> None:
    backend = make_backend(upstream.url)
    try:
        chunks = await collect(backend, "no-usage")
    finally:
        await backend.aclose()
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.estimated
    assert usage.completion_tokens > 0
    assert usage.prompt_tokens > 0


async def test_429_is_retried_before_the_first_token(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url)
    try:
        chunks = await collect(backend, "rate-limit:2")
    finally:
        await backend.aclose()
    assert "".join(c.delta for c in chunks) == "".join(WORDS)
    assert upstream.calls_to("rate-limit:2") == 3  # two refusals, then the answer


async def test_5xx_gives_up_after_the_retries_with_502(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url, max_retries=2)
    try:
        with pytest.raises(UpstreamBadResponse) as caught:
            await collect(backend, "fail")
    finally:
        await backend.aclose()
    assert caught.value.status_code == 502
    assert "upstream exploded" in caught.value.message
    assert upstream.calls_to("fail") == 3


async def test_exhausted_rate_limit_is_503_with_retry_after(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url, max_retries=1)
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            await collect(backend, "rate-limit:5")
    finally:
        await backend.aclose()
    assert caught.value.status_code == 503
    assert caught.value.headers["Retry-After"] == "1"
    assert upstream.calls_to("rate-limit:5") == 2
    assert backend.breaker.consecutive_failures == 0  # rate limiting is not an outage


async def test_no_retry_after_the_first_token(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url)
    received: list[str] = []

    async def read() -> None:
        async for chunk in backend.stream(QUESTION, model="disconnect"):
            received.append(chunk.delta)

    try:
        with pytest.raises(UpstreamBadResponse):
            await read()
    finally:
        await backend.aclose()
    assert "".join(received) == "".join(WORDS[:2])
    assert upstream.calls_to("disconnect") == 1


async def test_a_slow_first_token_is_504_and_not_retried(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url, first_token_timeout_s=0.3)
    try:
        with pytest.raises(UpstreamTimeout) as caught:
            await collect(backend, "slow-first:2")
        with pytest.raises(UpstreamTimeout):
            await collect(backend, "slow-headers:2")
    finally:
        await backend.aclose()
    assert caught.value.status_code == 504
    assert upstream.calls_to("slow-first:2") == 1
    assert upstream.calls_to("slow-headers:2") == 1


async def test_the_whole_answer_has_a_deadline(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url, first_token_timeout_s=0.2, total_timeout_s=0.2)
    try:
        with pytest.raises(UpstreamTimeout):
            await collect(backend, "slow-first:1")
    finally:
        await backend.aclose()


async def test_invalid_json_and_mid_stream_errors_are_502(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url)
    try:
        with pytest.raises(UpstreamBadResponse, match="invalid JSON"):
            await collect(backend, "garbage")
        with pytest.raises(UpstreamBadResponse, match="overloaded"):
            await collect(backend, "mid-error")
    finally:
        await backend.aclose()


async def _peak_bytes_while(call: Awaitable[object]) -> int:
    """The most memory allocated at once while `call` ran, in bytes."""
    tracemalloc.start()
    try:
        await call
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_line_that_never_ends_is_502_once_past_its_bound(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url, first_token_timeout_s=10)
    caught: list[UpstreamBadResponse] = []

    async def read() -> None:
        with pytest.raises(UpstreamBadResponse) as error:
            # 16 MiB without a newline, then silence until the client leaves.
            await collect(backend, "long-line")
        caught.append(error.value)

    try:
        held = await _peak_bytes_while(read())
    finally:
        await backend.aclose()
    [error] = caught
    assert error.status_code == 502
    assert error.message == "the model sent a line longer than 1024 KiB"
    assert backend.breaker.consecutive_failures == 1  # counted as any broken stream
    assert held < 4 * MAX_LINE_BYTES, held


async def test_a_huge_error_body_is_read_in_part_and_passed_on(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url, max_retries=0)
    caught: list[UpstreamBadResponse] = []

    async def read() -> None:
        with pytest.raises(UpstreamBadResponse) as error:
            await collect(backend, "huge-error")  # a 32 MiB error message
        caught.append(error.value)

    try:
        held = await _peak_bytes_while(read())
    finally:
        await backend.aclose()
    [error] = caught
    assert error.status_code == 502
    assert error.message == "the model failed (HTTP 500): an error too long to pass on"
    assert held < 4 * 1024 * 1024, held


async def test_a_refused_request_is_400_with_the_upstreams_words(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url)
    try:
        with pytest.raises(UpstreamRejected) as caught:
            await collect(backend, "too-long")
    finally:
        await backend.aclose()
    assert caught.value.status_code == 400
    assert "maximum context length" in caught.value.message
    assert upstream.calls_to("too-long") == 1
    assert backend.breaker.consecutive_failures == 0


async def test_an_unreachable_upstream_is_503(upstream: FakeUpstream) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    backend = make_backend(closed, max_retries=1)
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            await collect(backend, "ok")
        health = await backend.health()
    finally:
        await backend.aclose()
    assert caught.value.status_code == 503
    assert "Retry-After" in caught.value.headers
    assert not health.ok


async def test_breaker_opens_probes_and_closes(upstream: FakeUpstream) -> None:
    states: list[BreakerState] = []
    clock = ManualClock()
    backend = make_backend(
        upstream.url, clock=clock, max_retries=0, breaker_failures=2, breaker_reset_s=30
    )
    backend.breaker.on_change = states.append
    try:
        for _ in range(2):
            with pytest.raises(UpstreamBadResponse):
                await collect(backend, "fail")
        assert backend.breaker.state is BreakerState.open
        # Open: refused at once, the upstream not called, Retry-After from the breaker.
        with pytest.raises(UpstreamUnavailable) as caught:
            await collect(backend, "ok")
        assert caught.value.headers["Retry-After"] == "30"
        assert upstream.calls_to("ok") == 0
        assert not (await backend.health()).ok
        clock.advance(30)
        # Half-open: a failed probe opens it again ...
        with pytest.raises(UpstreamBadResponse):
            await collect(backend, "fail")
        assert backend.breaker.state is BreakerState.open
        clock.advance(30)
        # ... and a successful one closes it.
        chunks = await collect(backend, "ok")
        assert chunks[-1].usage is not None
        assert backend.breaker.state is BreakerState.closed
    finally:
        await backend.aclose()
    assert states == [
        BreakerState.open,
        BreakerState.half_open,
        BreakerState.open,
        BreakerState.half_open,
        BreakerState.closed,
    ]
    assert upstream.calls_to("fail") == 3


async def test_models_are_listed_and_cached(upstream: FakeUpstream) -> None:
    backend = make_backend(upstream.url)
    try:
        first = await backend.models()
        second = await backend.models()
        health = await backend.health()
    finally:
        await backend.aclose()
    assert "ok" in first
    assert first == second
    assert health.ok


class _NotHttp:
    """A server on 127.0.0.1 that answers every request with bytes that are not HTTP."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"NOT-HTTP garbage\r\n\r\n")
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_a_reply_that_is_not_http_is_retried_counted_and_frees_the_probe() -> None:
    garbage = _NotHttp()
    async with garbage as url:
        clock = ManualClock()
        backend = make_backend(
            url, clock=clock, max_retries=1, breaker_failures=2, breaker_reset_s=20
        )
        try:
            with pytest.raises(UpstreamUnavailable):
                await collect(backend, "ok")
            assert garbage.connections == 2  # the attempt and its retry
            assert backend.breaker.state is BreakerState.open
            clock.advance(20)
            # The half-open probe meets the same reply: the breaker opens again, and after
            # its reset time it lets the next probe through (it is not stuck half-open).
            with pytest.raises(UpstreamUnavailable):
                await collect(backend, "ok")
            assert backend.breaker.state is BreakerState.open
            clock.advance(20)
            before = garbage.connections
            with pytest.raises(UpstreamUnavailable):
                await collect(backend, "ok")
            assert garbage.connections > before  # probed again, not refused by a stuck breaker
            assert not (await backend.health()).ok
            with pytest.raises(UpstreamBadResponse):
                await backend.models()
        finally:
            await backend.aclose()


async def test_a_cancelled_probe_frees_the_breaker(upstream: FakeUpstream) -> None:
    clock = ManualClock()
    backend = make_backend(
        upstream.url, clock=clock, max_retries=0, breaker_failures=1, breaker_reset_s=10
    )
    try:
        with pytest.raises(UpstreamBadResponse):
            await collect(backend, "fail")
        clock.advance(10)
        probe = asyncio.create_task(collect(backend, "slow-headers:5"))
        # The probe waits for the upstream's answer to begin.
        await _until(lambda: upstream.calls_to("slow-headers:5") == 1)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        chunks = await collect(backend, "ok")  # the next call is the probe now
        assert chunks[-1].usage is not None
        assert backend.breaker.state is BreakerState.closed
    finally:
        await backend.aclose()


async def test_proxies_from_the_environment_are_used(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upstream's name resolves nowhere: only through the proxy (the fake upstream
    # itself, which answers an absolute-form request like any other) can it be reached.
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy = upstream.url.removesuffix("/v1")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    backend = make_backend("http://upstream.invalid/v1")
    try:
        chunks = await collect(backend, "ok")
    finally:
        await backend.aclose()
    assert "".join(c.delta for c in chunks) == "".join(WORDS)
    assert upstream.calls_to("ok") == 1


async def test_no_proxy_exempts_the_upstreams_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from chatlens.inference.upstream import _environment_proxy

    for name in ("ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("http_proxy", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "vllm.internal")
    monkeypatch.setenv("no_proxy", "vllm.internal")
    proxy = _environment_proxy("http://api.example.com/v1")
    assert proxy is not None and str(proxy.url) == "http://proxy.internal:3128"
    assert _environment_proxy("http://vllm.internal:8000/v1") is None
    assert _environment_proxy("https://api.example.com/v1") is None  # no HTTPS_PROXY
