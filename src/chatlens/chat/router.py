"""Chat and conversation routes: parse, authorize, call the service, shape the response."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatlens.auth.deps import AuthenticatedRoute, CurrentUser
from chatlens.chat import conversations
from chatlens.chat.answer import Answer
from chatlens.chat.deps import PipelineDep
from chatlens.chat.pipeline import ChatPipeline
from chatlens.chat.schemas import (
    ChatRequest,
    ChatResponse,
    ConversationCreate,
    ConversationRead,
    ConversationUpdate,
    MessageCreate,
    MessageRead,
    Page,
    ProjectId,
    RegenerateRequest,
    StreamDelta,
    StreamError,
)
from chatlens.chat.turn import Turn
from chatlens.db.session import SessionDep
from chatlens.models import ConversationStatus
from chatlens.pagination import CursorText, decode_cursor
from chatlens.responses import errors

router = APIRouter(tags=["chat"], route_class=AuthenticatedRoute)


def _sse_event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """One kind of server-sent event: its name, and its data as JSON of the given schema."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
    }


# `itemSchema` describes each event of the stream, as FastAPI's own SSE routes do.
_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer: JSON, or server-sent events `delta` {content}, then "
        "`done` with the ChatResponse, or `error` {type, message}",
        "content": {
            "text/event-stream": {
                "itemSchema": {
                    "oneOf": [
                        _sse_event("delta", StreamDelta.model_json_schema()),
                        _sse_event("done", {"$ref": "#/components/schemas/ChatResponse"}),
                        _sse_event("error", StreamError.model_json_schema()),
                    ]
                },
            }
        },
    }
}


Limit = Annotated[int, Query(ge=1, le=100, description="Page size")]
CursorParam = Annotated[CursorText | None, Query(description="`next_cursor` of the previous page")]


def wants_stream(flag: bool | None, request: Request, *, default: bool) -> bool:
    """An explicit `stream` flag wins; else `Accept: text/event-stream` asks for SSE."""
    if flag is not None:
        return flag
    if "text/event-stream" in request.headers.get("accept", ""):
        return True
    return default


def _endpoint(request: Request) -> str:
    """The route template, a bounded metric label."""
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


async def _events(answer: Answer) -> AsyncIterator[ServerSentEvent]:
    # Closed with this generator (a send that failed included): the answer is stored then.
    async with aclosing(answer.stream()) as events:
        async for event in events:
            if isinstance(event, str):
                data = StreamDelta(content=event).model_dump_json()
                yield ServerSentEvent(data, event="delta")
            elif isinstance(event, ChatResponse):
                yield ServerSentEvent(event.model_dump_json(), event="done")
            else:
                error = StreamError(type=event.error_type, message=event.message)
                yield ServerSentEvent(error.model_dump_json(), event="error")


async def _respond(
    pipeline: ChatPipeline, turn: Turn, *, stream: bool
) -> ChatResponse | EventSourceResponse:
    if stream:
        return EventSourceResponse(_events(pipeline.answer(turn)), ping=15)
    return await pipeline.complete(turn)


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={**_SSE_DOC, **errors(401, 404, 413, 422, 502)},
)
async def chat(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    pipeline: PipelineDep,
    body: ChatRequest,
) -> ChatResponse | EventSourceResponse:
    """Ask the support bot; starts a conversation unless `conversation_id` is given."""
    turn = await pipeline.start_turn(
        session,
        user=user,
        text=body.message,
        conversation_id=body.conversation_id,
        project_id=body.project_id,
        platform=body.platform,
        external_user_id=body.user,
        endpoint=_endpoint(request),
    )
    return await _respond(pipeline, turn, stream=wants_stream(body.stream, request, default=False))


@router.get("/api/conversations", response_model=Page[ConversationRead], responses=errors(401, 422))
async def list_conversations(
    session: SessionDep,
    user: CurrentUser,
    limit: Limit = 20,
    cursor: CursorParam = None,
    status: ConversationStatus | None = None,
    project_id: Annotated[ProjectId | None, Query()] = None,
) -> Page[ConversationRead]:
    """Your conversations, newest first."""
    page = await conversations.list_conversations(
        session,
        user=user,
        limit=limit,
        cursor=decode_cursor(cursor),
        status=status,
        project_id=project_id,
    )
    return Page[ConversationRead](
        items=[ConversationRead.model_validate(c) for c in page.items],
        next_cursor=page.next_cursor,
    )


@router.post(
    "/api/conversations",
    response_model=ConversationRead,
    status_code=status.HTTP_201_CREATED,
    responses=errors(401, 422),
)
async def create_conversation(
    session: SessionDep,
    user: CurrentUser,
    pipeline: PipelineDep,
    body: ConversationCreate | None = None,
) -> ConversationRead:
    """Start an empty conversation."""
    body = body or ConversationCreate()
    conversation = await conversations.create_conversation(
        session,
        user=user,
        project_id=body.project_id,
        platform=body.platform,
        external_user_id=body.user,
        title=body.title,
        metrics=pipeline.metrics,
    )
    return ConversationRead.model_validate(conversation)


@router.get(
    "/api/conversations/{conversation_id}",
    response_model=ConversationRead,
    responses=errors(401, 404, 422),
)
async def get_conversation(
    session: SessionDep, user: CurrentUser, conversation_id: uuid.UUID
) -> ConversationRead:
    """One of your conversations."""
    conversation = await conversations.get_conversation_or_raise(
        session, user=user, conversation_id=conversation_id
    )
    return ConversationRead.model_validate(conversation)


@router.patch(
    "/api/conversations/{conversation_id}",
    response_model=ConversationRead,
    responses=errors(401, 404, 422),
)
async def update_conversation(
    session: SessionDep, user: CurrentUser, conversation_id: uuid.UUID, body: ConversationUpdate
) -> ConversationRead:
    """Rename a conversation."""
    conversation = await conversations.update_conversation(
        session, user=user, conversation_id=conversation_id, title=body.title
    )
    return ConversationRead.model_validate(conversation)


@router.delete(
    "/api/conversations/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 404, 422),
)
async def delete_conversation(
    session: SessionDep, user: CurrentUser, conversation_id: uuid.UUID
) -> None:
    """Delete a conversation and its messages."""
    await conversations.delete_conversation(session, user=user, conversation_id=conversation_id)


@router.get(
    "/api/conversations/{conversation_id}/messages",
    response_model=Page[MessageRead],
    responses=errors(401, 404, 422),
)
async def list_messages(
    session: SessionDep,
    user: CurrentUser,
    conversation_id: uuid.UUID,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Page[MessageRead]:
    """A conversation's messages, oldest first."""
    page = await conversations.list_messages(
        session,
        user=user,
        conversation_id=conversation_id,
        limit=limit,
        cursor=decode_cursor(cursor),
    )
    return Page[MessageRead](
        items=[MessageRead.model_validate(m) for m in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/api/conversations/{conversation_id}/messages",
    response_model=ChatResponse,
    responses={**_SSE_DOC, **errors(401, 404, 413, 422, 502)},
)
async def send_message(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    pipeline: PipelineDep,
    conversation_id: uuid.UUID,
    body: MessageCreate,
) -> ChatResponse | EventSourceResponse:
    """Send a message in a conversation; the answer streams as server-sent events."""
    turn = await pipeline.start_turn(
        session,
        user=user,
        text=body.message,
        conversation_id=conversation_id,
        endpoint=_endpoint(request),
    )
    return await _respond(pipeline, turn, stream=wants_stream(body.stream, request, default=True))


@router.post(
    "/api/conversations/{conversation_id}/regenerate",
    response_model=ChatResponse,
    responses={**_SSE_DOC, **errors(401, 404, 409, 422, 502)},
)
async def regenerate(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    pipeline: PipelineDep,
    conversation_id: uuid.UUID,
    body: RegenerateRequest | None = None,
) -> ChatResponse | EventSourceResponse:
    """Answer the last question again, replacing the last answer; streams by default."""
    turn = await pipeline.start_regenerate(
        session, user=user, conversation_id=conversation_id, endpoint=_endpoint(request)
    )
    flag = body.stream if body is not None else None
    return await _respond(pipeline, turn, stream=wants_stream(flag, request, default=True))
