"""Any OpenAI-compatible Chat Completions endpoint as the model: OpenAI, vLLM, Ollama, ..."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import httpx
import orjson
import structlog
from httpx_aiohttp import AiohttpTransport

from chatlens import __version__
from chatlens.inference.base import BackendHealth, ChatMessage, Chunk, Usage
from chatlens.inference.breaker import BreakerState, CircuitBreaker
from chatlens.inference.errors import (
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatlens.inference.intents import UNKNOWN_INTENT, IntentMatcher, detect, last_question
from chatlens.inference.knowledge_base import KnowledgeBase
from chatlens.inference.tokens import count_prompt_tokens, count_tokens
from chatlens.inference.upstream_wire import (
    CLIENT_ERRORS,
    MAX_ANSWER_CHARS,
    MAX_LINE_BYTES,
    MAX_MODELS_BODY_BYTES,
    Distrust,
    backoff,
    choices_of,
    content_of,
    error_body,
    error_message,
    finish_reason_of,
    model_ids,
    model_of,
    next_read,
    parse_event,
    retry_after,
    unreachable,
    usage_of,
)
from chatlens.observability.tracing import HttpClientSpan

log = structlog.get_logger(__name__)

_MODELS_TTL_S = 60.0
_HEALTH_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    base_url: str
    api_key: str | None
    default_model: str
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 30.0
    total_timeout_s: float = 120.0
    max_retries: int = 2
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0


class _Retryable(Exception):
    """An attempt failed before the first token in a way worth another try."""

    def __init__(self, error: UpstreamError, retry_after_s: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after_s = retry_after_s


class OpenAIBackend:
    """Streams from `{base_url}/chat/completions` through one pooled httpx client (its
    transport, aiohttp's connection pool, for the answers themselves).

    Retries (jittered backoff, honouring Retry-After) happen only before the first token,
    on connect errors, 429 and 5xx; a circuit breaker stops calls to an upstream that keeps
    failing. The intent comes from the builtin matcher on the user's message, so intent
    analytics work with any model.
    """

    name = "openai"

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        knowledge_base: KnowledgeBase,
        matcher: IntentMatcher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.default_model = config.default_model
        self.knowledge_base = knowledge_base
        self.matcher = matcher or IntentMatcher(knowledge_base)
        auth = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        # Reads are bounded by the first-token and whole-answer deadlines instead.
        timeout = httpx.Timeout(connect=config.connect_timeout_s, read=None, write=30.0, pool=30.0)
        # httpx's API over aiohttp's connections: httpx's own pool (httpcore on anyio) costs
        # a relayed answer more CPU (benchmarks/README.md).
        self._transport = AiohttpTransport(
            client=_aiohttp_session, proxy=_environment_proxy(config.base_url)
        )
        self._client = httpx.AsyncClient(
            transport=self._transport, base_url=config.base_url, headers=auth, timeout=timeout
        )
        # The answers go straight to the client's transport, with requests built here once
        # per call: the client's URL merging, auth and redirect flow, event hooks and cookie
        # jar cost time on every call, and an upstream model needs none of them.
        self._completions_url = self._client.base_url.join("chat/completions")
        self._completions_headers = {
            **auth,
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "User-Agent": f"chatlens/{__version__}",
        }
        self._timeouts = {"timeout": timeout.as_dict()}
        # host:port, as the logs name the model server: never the URL (it may hold
        # credentials), and never in what API clients are told.
        url = self._completions_url
        self._where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        self.breaker = CircuitBreaker(
            failures=config.breaker_failures,
            reset_s=config.breaker_reset_s,
            name=self.name,
            clock=clock,
        )
        self._models: tuple[float, list[str]] | None = None

    # -- the answer ------------------------------------------------------------------------

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str | None = None
    ) -> AsyncGenerator[Chunk, None]:
        model = model or self.default_model
        started = time.monotonic()
        deadline = started + self.config.total_timeout_s
        first_token_deadline = min(deadline, started + self.config.first_token_timeout_s)
        response = await self._open(model, messages, first_token_deadline)
        prompt = [m.content for m in messages]  # cut out of the upstream's error messages
        parts: list[str] = []
        length = 0  # characters of the answer so far
        usage: Usage | None = None
        finish_reason: str | None = None
        answered_model = model
        distrust = Distrust(model)
        done = False
        settled = False
        try:
            # Read what the network delivers and take every complete line of it: the
            # deltas of one read go out as one chunk (a read usually holds several events),
            # so the per-event cost is paid per read, not per word.
            reads = response.aiter_bytes()
            pending = bytearray()  # a line whose end has not arrived yet
            ended = False
            while not ended:
                limit = first_token_deadline if not parts else deadline
                try:
                    data = await next_read(reads, limit)
                except StopAsyncIteration:
                    ended = True
                    data = b"\n"  # a last line without its newline still counts
                # Each byte is scanned once: a line that arrives in many reads is not
                # searched again from its start on every read.
                *lines, rest = data.split(b"\n")
                if lines and pending:
                    lines[0] = bytes(pending) + lines[0]
                    pending.clear()
                pending += rest
                text: list[str] = []
                for raw in lines:
                    line = raw.strip()
                    if done or not line.startswith(b"data:"):
                        continue  # separators, comments, `event:` lines, anything after [DONE]
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True  # read on to the end: the connection goes back to the pool
                        continue
                    event = parse_event(payload, prompt=prompt)
                    answered_model = model_of(event.get("model"), distrust) or answered_model
                    for choice in choices_of(event):
                        said = choice.get("delta")
                        content = said.get("content") if isinstance(said, dict) else None
                        delta = content_of(content, distrust)
                        if delta:
                            text.append(delta)
                        reason = finish_reason_of(choice.get("finish_reason"), distrust)
                        finish_reason = reason or finish_reason
                    if event.get("usage"):
                        usage = usage_of(event["usage"], distrust)
                if len(pending) > MAX_LINE_BYTES:
                    if not done:
                        raise UpstreamBadResponse(
                            f"the model sent a line longer than {MAX_LINE_BYTES // 1024} KiB"
                        )
                    ended = True  # what follows the answer's end is not read any further
                    pending.clear()
                piece = "".join(text)
                if length + len(piece) > MAX_ANSWER_CHARS:
                    # What the client is sent is what is stored: both end here.
                    distrust.refuse("content", f"answer longer than {MAX_ANSWER_CHARS} characters")
                    piece = piece[: MAX_ANSWER_CHARS - length]
                    finish_reason, done, ended = "length", True, True
                if piece:
                    length += len(piece)
                    parts.append(piece)
                    yield Chunk(delta=piece)
            if not done and finish_reason is None:
                raise UpstreamBadResponse("the model's stream broke off before the answer ended")
            self.breaker.success()
            settled = True
        except UpstreamError as exc:
            if exc.breaker_failure:
                self.breaker.failure()
                settled = True
            _log_failure(exc, model, self._where)
            raise
        except CLIENT_ERRORS as exc:
            self.breaker.failure()
            settled = True
            error = UpstreamBadResponse(f"the model's stream failed: {type(exc).__name__}")
            _log_failure(error, model, self._where)
            raise error from exc
        finally:
            if not settled:
                self.breaker.release()  # the client left mid-answer: no verdict on the upstream
            await response.aclose()

        # The intent is only needed with the last chunk: detected once the answer is in, so
        # the question reaches the model without waiting for it.
        match = detect(self.matcher, last_question(messages))
        intent = self.knowledge_base.get(match.intent)
        escalation = "user_request" if intent is not None and intent.escalate else None
        if usage is None:
            # No usage chunk (an older server, or one that ignores stream_options): counted
            # here and marked, never 0 tokens for an answer that has text.
            usage = Usage(
                prompt_tokens=count_prompt_tokens(messages),
                completion_tokens=count_tokens("".join(parts)),
                estimated=True,
            )
        yield Chunk(
            usage=usage,
            finish_reason=finish_reason or "stop",
            intent=match.intent if intent is not None else UNKNOWN_INTENT,
            confidence=match.confidence,
            escalation_reason=escalation,
            model=answered_model,
            rejected=tuple(distrust.fields),
        )

    async def _open(
        self, model: str, messages: Sequence[ChatMessage], first_token_deadline: float
    ) -> httpx.Response:
        """Send the request, retrying before the first token; the 200 response, streaming."""
        body = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        content = orjson.dumps(body)
        attempt = 0
        while True:
            wait = self.breaker.retry_after()
            if wait is not None:
                raise UpstreamUnavailable(
                    "the model is unavailable (circuit open); try again later",
                    retry_after_s=wait,
                    breaker_failure=False,
                )
            try:
                return await self._attempt(content, first_token_deadline, messages)
            except _Retryable as failed:
                if failed.error.breaker_failure:
                    self.breaker.failure()
                else:
                    self.breaker.release()
                delay = backoff(attempt, failed.retry_after_s)
                attempt += 1
                if (
                    attempt > self.config.max_retries
                    or time.monotonic() + delay >= first_token_deadline
                ):
                    _log_failure(failed.error, model, self._where, attempts=attempt)
                    raise failed.error from None
                log.info(
                    "upstream_retry",
                    model=model,
                    upstream=self._where,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    error_type=failed.error.error_type,
                    reason=failed.error.message,
                )
                await asyncio.sleep(delay)
            except UpstreamError as exc:
                if exc.breaker_failure:
                    self.breaker.failure()
                else:
                    self.breaker.release()
                _log_failure(exc, model, self._where, attempts=attempt + 1)
                raise
            except BaseException:
                # Cancelled (the client left), or an error of ours: no verdict on the
                # upstream, and a half-open breaker's probe must not stay taken.
                self.breaker.release()
                raise

    async def _attempt(
        self, content: bytes, first_token_deadline: float, messages: Sequence[ChatMessage]
    ) -> httpx.Response:
        span = HttpClientSpan("POST", self._completions_url)
        request = httpx.Request(
            "POST",
            self._completions_url,
            content=content,
            headers={**self._completions_headers, **span.headers},
            extensions=self._timeouts,
        )
        remaining = first_token_deadline - time.monotonic()
        try:
            try:
                async with asyncio.timeout(remaining):
                    response = await self._transport.handle_async_request(request)
            except BaseException as exc:
                span.fail(exc)
                raise
        except TimeoutError:
            raise UpstreamTimeout(
                "the model server did not start answering within "
                f"{self.config.first_token_timeout_s:g} s"
            ) from None
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            # The transport reports every failed connect as a ConnectTimeout: what happened
            # is read from its cause. aiohttp's own errors (a reply that is not HTTP, a
            # header line too long) are retried and counted all the same.
            reason = unreachable(exc, self.config.connect_timeout_s)
            raise _Retryable(UpstreamUnavailable(reason, retry_after_s=1)) from exc
        span.finish(response.status_code)
        if response.status_code == 200:
            return response
        raw, cut = await error_body(response, first_token_deadline)
        prompt = [m.content for m in messages]
        message = error_message(raw, prompt=prompt, cut=cut) or f"HTTP {response.status_code}"
        status = response.status_code
        if status == 429:
            wait_s = retry_after(response.headers.get("retry-after"))
            error = UpstreamUnavailable(
                f"the model is rate-limited: {message}",
                retry_after_s=wait_s if wait_s is not None else 1,
                breaker_failure=False,
            )
            raise _Retryable(error, wait_s)
        if status >= 500:
            wait_s = retry_after(response.headers.get("retry-after"))
            raise _Retryable(
                UpstreamBadResponse(f"the model failed (HTTP {status}): {message}"), wait_s
            )
        if status in (401, 403):
            # Our key, not the client's request: the client cannot fix it.
            raise UpstreamBadResponse(f"the model refused chatlens's credentials: {message}")
        raise UpstreamRejected(message)

    # -- models and health -----------------------------------------------------------------

    async def models(self) -> list[str]:
        """The upstream's model ids (GET /models), cached for a minute."""
        now = time.monotonic()
        if self._models is not None and now - self._models[0] < _MODELS_TTL_S:
            return list(self._models[1])
        try:
            status, body = await self._get_models(timeout_s=10.0, limit=MAX_MODELS_BODY_BYTES)
            if status >= 400:
                raise UpstreamBadResponse(f"the model list could not be read: HTTP {status}")
            ids = model_ids(orjson.loads(body).get("data"))
        except (*CLIENT_ERRORS, orjson.JSONDecodeError, KeyError, AttributeError) as exc:
            raise UpstreamBadResponse(
                f"the model list could not be read: {type(exc).__name__}"
            ) from exc
        self._models = (now, ids)
        return list(ids)

    async def health(self) -> BackendHealth:
        started = time.perf_counter()
        if self.breaker.state is BreakerState.open:
            return BackendHealth(ok=False, latency_ms=0.0, error="circuit open")
        try:
            status, _ = await self._get_models(
                timeout_s=_HEALTH_TIMEOUT_S, limit=MAX_MODELS_BODY_BYTES
            )
        except CLIENT_ERRORS as exc:
            elapsed = (time.perf_counter() - started) * 1000
            error = unreachable(exc, _HEALTH_TIMEOUT_S)
            return BackendHealth(ok=False, latency_ms=elapsed, error=error)
        except UpstreamBadResponse as exc:
            elapsed = (time.perf_counter() - started) * 1000
            return BackendHealth(ok=False, latency_ms=elapsed, error=exc.message)
        elapsed = (time.perf_counter() - started) * 1000
        if status >= 400:
            return BackendHealth(ok=False, latency_ms=elapsed, error=f"HTTP {status}")
        return BackendHealth(ok=True, latency_ms=elapsed)

    async def _get_models(self, *, timeout_s: float, limit: int) -> tuple[int, bytes]:
        """GET /models: its status and at most `limit` bytes of its body (a longer one is
        refused: a list of models is not megabytes long)."""
        span = HttpClientSpan("GET", self._client.base_url.join("models"))
        request = self._client.build_request(
            "GET", "models", headers=span.headers, timeout=timeout_s
        )
        try:
            response = await self._client.send(request, stream=True)
            body = bytearray()
            try:
                if response.status_code < 400:
                    async for data in response.aiter_bytes():
                        body += data
                        if len(body) > limit:
                            raise UpstreamBadResponse(
                                f"the model list is longer than {limit // (1024 * 1024)} MiB"
                            )
            finally:
                await response.aclose()
        except BaseException as exc:
            span.fail(exc)
            raise
        span.finish(response.status_code)
        return response.status_code, bytes(body)

    async def aclose(self) -> None:
        await self._client.aclose()


def _aiohttp_session() -> aiohttp.ClientSession:
    """The transport's session, made at its first call (inside the event loop), verifying
    certificates with httpx's bundle as httpx would."""
    connector = aiohttp.TCPConnector(limit=200, ssl=httpx.create_ssl_context())
    return aiohttp.ClientSession(connector=connector)


def _environment_proxy(url: str) -> httpx.Proxy | None:
    """The proxy that HTTP(S)_PROXY or ALL_PROXY names for `url`, unless NO_PROXY exempts
    its host: read once, as httpx's own transport does. (aiohttp's `trust_env` reads the
    environment again on every request.)"""
    target = httpx.URL(url)
    if urllib.request.proxy_bypass(target.host):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(target.scheme) or proxies.get("all")
    return httpx.Proxy(proxy) if proxy else None


def _log_failure(
    error: UpstreamError, model: str, where: str, *, attempts: int | None = None
) -> None:
    log.warning(
        "upstream_failed",
        model=model,
        upstream=where,
        error_type=error.error_type,
        status=error.status_code,
        reason=error.message,
        attempts=attempts,
    )
