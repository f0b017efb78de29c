"""The builtin bot: answers from the knowledge base, offline, deterministic and fast."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, Sequence

from chatlens.inference.base import BackendHealth, ChatMessage, Chunk, Usage
from chatlens.inference.intents import UNKNOWN_INTENT, IntentMatcher, detect, last_question
from chatlens.inference.knowledge_base import KnowledgeBase, detect_language
from chatlens.inference.tokens import count_prompt_tokens, count_tokens

BUILTIN_MODEL = "builtin-kb"
# A word with the white space after it, so the pieces join back into the exact answer.
_WORD = re.compile(r"\S+\s*")


class BuiltinBackend:
    """Matches the last user message to an intent and streams that intent's answer word by word.

    Below the escalation threshold it answers with the hand-off message instead, and reports
    the escalation so the conversation goes to an operator.
    """

    name = "builtin"
    default_model = BUILTIN_MODEL

    def __init__(
        self,
        knowledge_base: KnowledgeBase,
        *,
        escalation_threshold: float,
        stream_delay_ms: float = 0.0,
    ) -> None:
        self.knowledge_base = knowledge_base
        self.matcher = IntentMatcher(knowledge_base)
        self.escalation_threshold = escalation_threshold
        self._delay = stream_delay_ms / 1000

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str | None = None
    ) -> AsyncGenerator[Chunk, None]:
        question = last_question(messages)
        match = detect(self.matcher, question)
        language = detect_language(question)
        intent = self.knowledge_base.get(match.intent)
        escalation: str | None = None
        if intent is None or match.confidence < self.escalation_threshold:
            answer = getattr(self.knowledge_base.handoff, language)
            intent_name = UNKNOWN_INTENT
            escalation = "low_confidence"
        else:
            answer = getattr(intent.answer, language)
            intent_name = intent.name
            if intent.escalate:
                escalation = "user_request"

        for piece in _WORD.findall(answer):
            if self._delay:
                await asyncio.sleep(self._delay)
            yield Chunk(delta=piece)
        yield Chunk(
            usage=Usage(
                prompt_tokens=count_prompt_tokens(messages),
                completion_tokens=count_tokens(answer),
            ),
            finish_reason="stop",
            intent=intent_name,
            confidence=match.confidence,
            escalation_reason=escalation,
        )

    async def models(self) -> list[str]:
        return [BUILTIN_MODEL]

    async def health(self) -> BackendHealth:
        started = time.perf_counter()
        self.matcher.match_anew("health check")
        return BackendHealth(ok=True, latency_ms=(time.perf_counter() - started) * 1000)

    async def aclose(self) -> None:
        return None
