"""Builds the configured inference backend."""

from __future__ import annotations

from chatlens.inference.base import InferenceBackend
from chatlens.inference.builtin import BuiltinBackend
from chatlens.inference.knowledge_base import default_knowledge_base_path, load_knowledge_base
from chatlens.settings import Settings


def create_backend(settings: Settings) -> InferenceBackend:
    """The backend named by CHATLENS_INFERENCE_BACKEND (raises KnowledgeBaseError on a bad file)."""
    knowledge_base = load_knowledge_base(settings.knowledge_base or default_knowledge_base_path())
    return BuiltinBackend(
        knowledge_base,
        escalation_threshold=settings.escalation_threshold,
        stream_delay_ms=settings.builtin_stream_delay_ms,
    )
