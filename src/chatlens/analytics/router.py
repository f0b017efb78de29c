"""Feedback on answers, CSAT/NPS, intent labels, escalation and resolution (the reading
side, summaries to exports, is in reports_router.py)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.analytics import service
from chatlens.analytics.deps import FeedbackDep
from chatlens.analytics.schemas import (
    CsatCreate,
    EscalateRequest,
    FeedbackRead,
    IntentLabel,
    IntentLabelRead,
    NpsCreate,
    RatingCreate,
    ResolveRequest,
)
from chatlens.auth.deps import AdminUser, AuthenticatedRoute, CurrentUser
from chatlens.auth.service import Principal
from chatlens.chat import conversations
from chatlens.chat.schemas import ConversationRead
from chatlens.db.session import SessionDep
from chatlens.inference.deps import BackendDep
from chatlens.inference.factory import intent_names
from chatlens.models import FeedbackKind
from chatlens.observability.deps import MetricsDep
from chatlens.responses import errors

router = APIRouter(
    prefix="/api",
    tags=["feedback"],
    responses=errors(401, 404, 422),
    route_class=AuthenticatedRoute,
)


def _answer(saved: service.Saved, response: Response) -> FeedbackRead:
    response.status_code = status.HTTP_201_CREATED if saved.created else status.HTTP_200_OK
    return FeedbackRead.model_validate(saved.feedback)


@router.post(
    "/messages/{message_id}/feedback",
    response_model=FeedbackRead,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "Replaced your earlier rating of this answer"}},
)
async def rate_answer(
    message_id: uuid.UUID,
    body: RatingCreate,
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    ctx: FeedbackDep,
) -> FeedbackRead:
    """Rate an answer up or down (stored with the answer's trace id)."""
    saved = await service.rate_message(
        session, ctx, user=user, message_id=message_id, up=body.rating == "up", comment=body.comment
    )
    return _answer(saved, response)


async def _score(
    kind: FeedbackKind,
    conversation_id: uuid.UUID,
    body: CsatCreate | NpsCreate,
    response: Response,
    session: AsyncSession,
    user: Principal,
    ctx: service.FeedbackContext,
) -> FeedbackRead:
    saved = await service.rate_conversation(
        session,
        ctx,
        user=user,
        conversation_id=conversation_id,
        kind=kind,
        score=body.score,
        comment=body.comment,
    )
    return _answer(saved, response)


@router.post(
    "/conversations/{conversation_id}/csat",
    response_model=FeedbackRead,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "Replaced the conversation's earlier CSAT"}},
)
async def give_csat(
    conversation_id: uuid.UUID,
    body: CsatCreate,
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    ctx: FeedbackDep,
) -> FeedbackRead:
    """Customer satisfaction, 1-5; one per conversation (a second replaces it)."""
    return await _score(FeedbackKind.csat, conversation_id, body, response, session, user, ctx)


@router.post(
    "/conversations/{conversation_id}/nps",
    response_model=FeedbackRead,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "Replaced the conversation's earlier NPS"}},
)
async def give_nps(
    conversation_id: uuid.UUID,
    body: NpsCreate,
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    ctx: FeedbackDep,
) -> FeedbackRead:
    """Net promoter score, 0-10; one per conversation (a second replaces it)."""
    return await _score(FeedbackKind.nps, conversation_id, body, response, session, user, ctx)


@router.put("/messages/{message_id}/intent", response_model=IntentLabelRead, responses=errors(403))
async def label_intent(
    message_id: uuid.UUID,
    body: IntentLabel,
    session: SessionDep,
    admin: AdminUser,
    backend: BackendDep,
    metrics: MetricsDep,
) -> IntentLabelRead:
    """An operator's label of an answer's true intent, for intent accuracy (admins)."""
    labeled = await service.label_intent(
        session,
        metrics,
        admin=admin,
        message_id=message_id,
        intent=body.intent,
        valid=intent_names(backend),
    )
    return IntentLabelRead(
        message_id=labeled.message.id,
        intent=labeled.message.intent,
        labeled_intent=labeled.labeled_intent,
        correct=labeled.correct,
    )


@router.post(
    "/conversations/{conversation_id}/escalate",
    response_model=ConversationRead,
    responses=errors(409),
)
async def escalate(
    conversation_id: uuid.UUID,
    session: SessionDep,
    user: CurrentUser,
    metrics: MetricsDep,
    body: EscalateRequest | None = None,
) -> ConversationRead:
    """Hand an open conversation to a person, with a coded reason and an optional note of
    up to 500 characters (409 unless it is open)."""
    request = body or EscalateRequest()
    conversation = await conversations.escalate(
        session,
        metrics,
        user=user,
        conversation_id=conversation_id,
        reason=request.reason,
        note=request.note,
    )
    return ConversationRead.model_validate(conversation)


@router.post(
    "/conversations/{conversation_id}/resolve",
    response_model=ConversationRead,
    responses=errors(409),
)
async def resolve(
    conversation_id: uuid.UUID,
    body: ResolveRequest,
    session: SessionDep,
    user: CurrentUser,
    metrics: MetricsDep,
) -> ConversationRead:
    """Close a conversation: resolved, converted or abandoned (409 if it already is)."""
    conversation = await conversations.resolve(
        session, metrics, user=user, conversation_id=conversation_id, outcome=body.outcome
    )
    return ConversationRead.model_validate(conversation)
