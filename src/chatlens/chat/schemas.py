from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from chatlens.fields import BLANKS, NOT_BLANK, TEXT_SCHEMA, StrictBool, Text, TextSchema
from chatlens.models import ConversationStatus, MessageRole, MessageStatus

Platform = Literal["web", "telegram", "whatsapp", "slack", "email", "sms", "voice", "api", "other"]


def _not_blank(value: str) -> str:
    if not value.strip(BLANKS):
        raise ValueError("must not be blank")
    return value


MessageText = Annotated[
    Text,
    Field(min_length=1, max_length=8000, examples=["Where is my order?"]),
    AfterValidator(_not_blank),
    TextSchema(NOT_BLANK),
]
PROJECT_ID_PATTERN = r"^[a-z0-9_-]{1,64}$"
ProjectId = Annotated[str, Field(pattern=PROJECT_ID_PATTERN, examples=["default"]), TEXT_SCHEMA]
ExternalUser = Annotated[
    Text, Field(min_length=1, max_length=128, description="The end customer's id in your system")
]


class ChatRequest(BaseModel):
    message: MessageText
    conversation_id: uuid.UUID | None = Field(
        None, description="Continue this conversation; omit to start a new one"
    )
    project_id: ProjectId = "default"
    platform: Platform = "web"
    user: ExternalUser | None = None
    stream: StrictBool | None = Field(
        None, description="Answer as server-sent events (also chosen by Accept: text/event-stream)"
    )


class UsageRead(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    reply: str
    intent: str | None
    confidence: float | None
    escalated: bool = Field(description="This turn handed the conversation to an operator")
    model: str
    usage: UsageRead
    latency_ms: float = Field(description="From receiving the message to the stored answer")


class MessageCreate(BaseModel):
    message: MessageText
    stream: StrictBool | None = Field(
        None, description="false for a JSON answer; server-sent events otherwise"
    )


class RegenerateRequest(BaseModel):
    stream: StrictBool | None = Field(
        None, description="false for a JSON answer; server-sent events otherwise"
    )


class ConversationCreate(BaseModel):
    title: Annotated[Text, Field(min_length=1, max_length=255)] | None = None
    project_id: ProjectId = "default"
    platform: Platform = "web"
    user: ExternalUser | None = None


class ConversationUpdate(BaseModel):
    title: Annotated[
        Text,
        Field(min_length=1, max_length=255),
        AfterValidator(_not_blank),
        TextSchema(NOT_BLANK),
    ]


class ConversationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str | None
    project_id: str
    platform: str
    user: str | None = Field(validation_alias="external_user_id")
    status: ConversationStatus
    escalation_reason: str | None
    escalation_note: str | None = Field(description="Free text given with the escalation")
    outcome: str | None
    created_at: datetime
    updated_at: datetime
    first_response_at: datetime | None
    escalated_at: datetime | None
    resolved_at: datetime | None


class MessageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    conversation_id: uuid.UUID
    role: MessageRole
    content: str
    status: MessageStatus
    created_at: datetime
    model: str | None
    intent: str | None
    confidence: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    inference_time_ms: float | None
    ttft_ms: float | None
    trace_id: str | None
    span_id: str | None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class StreamDelta(BaseModel):
    """Data of an SSE `delta` event."""

    # Documented as sent: nothing else is in the event.
    model_config = ConfigDict(extra="forbid")

    content: str


class StreamError(BaseModel):
    """Data of an SSE `error` event."""

    model_config = ConfigDict(extra="forbid")

    type: str
    message: str
