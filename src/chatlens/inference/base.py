"""The one protocol every inference backend speaks."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]

# Bounds of what any backend reports, as stored: tokens of one answer (past any context
# window, within the columns) and a model's name (its column's length).
MAX_TOKENS = 10_000_000
MODEL_NAME_CHARS = 128


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0  # prompt tokens the provider served from its cache
    estimated: bool = False  # counted by chatlens because the backend reported none

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of an answer; the last chunk of a stream carries usage and finish reason."""

    delta: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    intent: str | None = None
    confidence: float | None = None
    # Set when the backend handed the conversation to a person, e.g. "low_confidence".
    escalation_reason: str | None = None
    # The error type when the configured backend failed and the builtin bot answered instead.
    fallback_from: str | None = None
    # The model that answered, when it differs from the one asked for (a fallback, an alias).
    model: str | None = None
    # The backend's values refused as out of bounds (usage, model, ...): logged, and counted.
    rejected: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BackendHealth:
    ok: bool
    latency_ms: float
    error: str | None = None


class InferenceBackend(Protocol):
    """What the chat pipeline needs from a model."""

    name: str
    default_model: str

    def stream(
        self, messages: Sequence[ChatMessage], *, model: str | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Stream an answer to the conversation; the last chunk carries usage."""
        ...

    async def models(self) -> list[str]: ...

    async def health(self) -> BackendHealth: ...

    async def aclose(self) -> None: ...
