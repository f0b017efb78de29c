"""The v1 API's wire format: OpenAI Chat Completions, as the official SDKs send and expect it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatlens.chat.schemas import ExternalUser, Platform, ProjectId
from chatlens.fields import BLANKS, NOT_BLANK, StrictBool, Text
from chatlens.inference.base import ChatMessage

MAX_MESSAGES = 200
MAX_CONTENT = 32_000


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: Annotated[Text, Field(max_length=MAX_CONTENT)]


class CompletionMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[Text, Field(max_length=MAX_CONTENT)] | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def as_chat_message(self) -> ChatMessage:
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=self.text())


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


class CompletionMetadata(BaseModel):
    """chatlens reads two keys of `metadata`; others are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    project_id: ProjectId = "default"
    platform: Platform = "api"


# What `_ends_with_a_question` requires, in the description: a user message with text.
_QUESTION = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"const": "user"},
        "content": {
            "anyOf": [
                {"type": "string", "pattern": NOT_BLANK},
                {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {"text": {"type": "string", "pattern": NOT_BLANK}},
                    },
                },
            ]
        },
    },
}


class CompletionRequest(BaseModel):
    """`POST /v1/chat/completions`; sampling parameters are accepted and not used."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[Text, Field(min_length=1, max_length=200)]
    messages: Annotated[
        list[CompletionMessage],
        Field(min_length=1, max_length=MAX_MESSAGES, json_schema_extra={"contains": _QUESTION}),
    ]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: ExternalUser | None = None
    metadata: CompletionMetadata | None = None

    @field_validator("messages")
    @classmethod
    def _ends_with_a_question(cls, messages: list[CompletionMessage]) -> list[CompletionMessage]:
        if not any(m.role == "user" and m.text().strip(BLANKS) for m in messages):
            raise ValueError("needs at least one user message with text")
        return messages

    @property
    def question(self) -> str:
        return next(m.text() for m in reversed(self.messages) if m.role == "user" and m.text())

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def chunk(
    completion_id: str,
    created: int,
    model: str,
    *,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: CompletionUsage | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk`; the usage chunk has no choices, as OpenAI sends it."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": (
            []
            if usage is not None
            else [
                {
                    "index": 0,
                    "delta": delta or {},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ]
        ),
    }
    if usage is not None:
        body["usage"] = usage.model_dump()
    return body
