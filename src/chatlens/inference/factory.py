"""Builds the configured inference backend."""

from __future__ import annotations

from chatlens.inference.base import InferenceBackend
from chatlens.inference.builtin import BuiltinBackend
from chatlens.inference.fallback import FallbackBackend
from chatlens.inference.knowledge_base import default_knowledge_base_path, load_knowledge_base
from chatlens.inference.upstream import OpenAIBackend, UpstreamConfig
from chatlens.settings import Settings


def create_backend(settings: Settings) -> InferenceBackend:
    """The backend named by CHATLENS_INFERENCE_BACKEND (raises KnowledgeBaseError on a bad file)."""
    knowledge_base = load_knowledge_base(settings.knowledge_base or default_knowledge_base_path())
    builtin = BuiltinBackend(
        knowledge_base,
        escalation_threshold=settings.escalation_threshold,
        stream_delay_ms=settings.builtin_stream_delay_ms,
    )
    if settings.inference_backend == "builtin":
        return builtin
    # Both are required by Settings for this backend.
    assert settings.openai_base_url is not None
    assert settings.model is not None
    config = UpstreamConfig(
        base_url=settings.openai_base_url,
        api_key=(settings.openai_api_key.get_secret_value() if settings.openai_api_key else None),
        default_model=settings.model,
        connect_timeout_s=settings.upstream_connect_timeout_seconds,
        first_token_timeout_s=settings.upstream_first_token_timeout_seconds,
        total_timeout_s=settings.upstream_timeout_seconds,
        max_retries=settings.upstream_max_retries,
        breaker_failures=settings.breaker_failures,
        breaker_reset_s=settings.breaker_reset_seconds,
    )
    # One matcher for both: the intent index is built once.
    upstream = OpenAIBackend(config, knowledge_base=knowledge_base, matcher=builtin.matcher)
    if settings.fallback_to_builtin:
        return FallbackBackend(upstream, builtin)
    return upstream


def intent_names(backend: InferenceBackend) -> list[str]:
    """The knowledge base's intents of a backend (through a fallback wrapper too)."""
    inner = getattr(backend, "primary", backend)
    knowledge_base = getattr(inner, "knowledge_base", None)
    if knowledge_base is None:
        return []
    return sorted(intent.name for intent in knowledge_base.intents)
