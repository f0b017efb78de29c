"""CHATLENS_FALLBACK_TO_BUILTIN: when the model fails before answering, the builtin bot does."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Sequence

import structlog

from chatlens.errors import ChatlensError
from chatlens.inference.base import BackendHealth, ChatMessage, Chunk, InferenceBackend

log = structlog.get_logger(__name__)
FALLBACK_ESCALATION = "backend_error"


class FallbackBackend:
    """The primary backend, and the fallback when the primary fails before its first word.

    The user gets an answer; the conversation is escalated (reason `backend_error`) so a
    person looks at it; the final chunk names the failure so it is still counted.
    """

    def __init__(self, primary: InferenceBackend, fallback: InferenceBackend) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.default_model = primary.default_model

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str | None = None
    ) -> AsyncGenerator[Chunk, None]:
        answered = False
        failure: ChatlensError | None = None
        primary = self.primary.stream(messages, model=model)
        try:
            async for chunk in primary:
                answered = answered or bool(chunk.delta)
                yield chunk
        except ChatlensError as exc:
            if answered:
                raise  # half an answer is out: switching bots now would garble it
            failure = exc
        finally:
            await primary.aclose()
        if failure is None:
            return
        log.warning(
            "fallback_to_builtin",
            backend=self.primary.name,
            error_type=failure.error_type,
            reason=failure.message,
        )
        async for chunk in self.fallback.stream(messages):
            if chunk.usage is not None or chunk.finish_reason is not None:
                chunk = dataclasses.replace(
                    chunk,
                    escalation_reason=FALLBACK_ESCALATION,
                    fallback_from=failure.error_type,
                    model=chunk.model or self.fallback.default_model,
                )
            yield chunk

    async def models(self) -> list[str]:
        return await self.primary.models()

    async def health(self) -> BackendHealth:
        return await self.primary.health()

    async def aclose(self) -> None:
        await self.primary.aclose()
        await self.fallback.aclose()
