"""The v1 API (OpenAI-compatible): existing OpenAI clients talk to chatlens and get its records.

Every call is a stored, metered, traced conversation turn, answered by whichever backend is
configured. Errors come in OpenAI's shape (see `chatlens.errors`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Response
from sse_starlette import EventSourceResponse

from chatlens.auth.deps import AuthenticatedRoute, CurrentUser
from chatlens.chat.answer import Answer
from chatlens.chat.deps import PipelineDep
from chatlens.chat.schemas import ChatResponse
from chatlens.chat.v1_schemas import (
    AssistantMessage,
    Choice,
    Completion,
    CompletionRequest,
    CompletionUsage,
    ModelCard,
    ModelList,
    chunk,
)
from chatlens.db.session import SessionDep
from chatlens.errors import openai_error_body
from chatlens.responses import errors

router = APIRouter(prefix="/v1", tags=["openai-compatible"], route_class=AuthenticatedRoute)

CONVERSATION_HEADER = "X-Chatlens-Conversation-Id"


def _usage(done: ChatResponse) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=done.usage.prompt_tokens,
        completion_tokens=done.usage.completion_tokens,
        total_tokens=done.usage.total_tokens,
    )


# With `stream: true`: `data:` events, each a chat.completion.chunk, then `data: [DONE]`; an
# error after the headers went out is a data event in OpenAI's error shape.
_CHUNK = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion.chunk"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array"},
        "usage": {"$ref": "#/components/schemas/CompletionUsage"},
    },
}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The completion: JSON, or (`stream: true`) server-sent `data:` events "
        "of chat.completion.chunk objects ending with `data: [DONE]`",
        "content": {
            "text/event-stream": {
                "itemSchema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "data": {
                            "oneOf": [
                                {
                                    "type": "string",
                                    "contentMediaType": "application/json",
                                    "contentSchema": {
                                        "oneOf": [
                                            _CHUNK,
                                            {"$ref": "#/components/schemas/OpenAIErrorResponse"},
                                        ]
                                    },
                                },
                                {"const": "[DONE]"},
                            ]
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/chat/completions", response_model=Completion, responses={**_STREAM_DOC, **errors(404, 502)}
)
async def chat_completions(
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    pipeline: PipelineDep,
    body: CompletionRequest,
    conversation_id: Annotated[uuid.UUID | None, Header(alias=CONVERSATION_HEADER)] = None,
) -> Completion | EventSourceResponse:
    """Chat Completions, streamed (`stream: true`) or not; a new conversation per call unless
    `X-Chatlens-Conversation-Id` names one of yours."""
    model = await pipeline.active_model.resolve(body.model)
    metadata = body.metadata
    turn = await pipeline.start_turn(
        session,
        user=user,
        text=body.question,
        conversation_id=conversation_id,
        project_id=metadata.project_id if metadata else "default",
        platform=metadata.platform if metadata else "api",
        external_user_id=body.user,
        endpoint="/v1/chat/completions",
        context=[m.as_chat_message() for m in body.messages if m.text()],
        model=model,
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    headers = {CONVERSATION_HEADER: str(turn.conversation_id)}
    answer = pipeline.answer(turn)
    if body.stream:
        events = _stream(answer, completion_id, created, include_usage=body.include_usage)
        return EventSourceResponse(events, ping=15, headers=headers)
    done = await answer.complete()
    response.headers.update(headers)
    return Completion(
        id=completion_id,
        created=created,
        model=done.model,
        choices=[
            Choice(message=AssistantMessage(content=done.reply), finish_reason=answer.finish_reason)
        ],
        usage=_usage(done),
    )


def _event(data: Any) -> bytes:
    """One SSE event, as OpenAI sends them (sse-starlette passes bytes on as they are)."""
    return b"data: " + orjson.dumps(data) + b"\r\n\r\n"


_DONE = b"data: [DONE]\r\n\r\n"


async def _stream(
    answer: Answer, completion_id: str, created: int, *, include_usage: bool
) -> AsyncIterator[bytes]:
    # OpenAI's first chunk carries the role; it goes out with the first words, in one write.
    role: bytes | None = _event(
        chunk(completion_id, created, answer.model, delta={"role": "assistant", "content": ""})
    )
    # Closed with this generator (a send that failed included): the answer is stored then.
    async with aclosing(answer.stream()) as events:
        async for event in events:
            if isinstance(event, str):
                delta = {"content": event}
                data = _event(chunk(completion_id, created, answer.model, delta=delta))
                if role is not None:
                    data, role = role + data, None
                yield data
                continue
            if role is not None and answer.error is None:  # an answer without a word
                yield role
                role = None
            if isinstance(event, ChatResponse):
                finish = answer.finish_reason
                yield _event(chunk(completion_id, created, event.model, finish_reason=finish))
                if include_usage:
                    yield _event(chunk(completion_id, created, event.model, usage=_usage(event)))
                yield _DONE
            else:
                # Headers are out: the error travels as a data event the SDKs raise as
                # APIError.
                body = openai_error_body(event.status_code, event.error_type, event.message)
                yield _event(body)


@router.get("/models", response_model=ModelList)  # its 401 is described with every other
async def list_models(_: CurrentUser, pipeline: PipelineDep) -> ModelList:
    """The models this chatlens can answer with (the backend's list)."""
    names = await pipeline.active_model.list_models()
    created = int(pipeline.started_at)
    owner = pipeline.active_model.backend.name
    return ModelList(data=[ModelCard(id=name, created=created, owned_by=owner) for name in names])
