"""Feedback on answers, CSAT/NPS, intent labels, escalation and resolution."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.analytics import export, report, service, sla, summary, timeseries
from chatlens.analytics.deps import FeedbackDep
from chatlens.analytics.filters import MAX_RANGE, Filters
from chatlens.analytics.schemas import (
    AvailabilityRead,
    CsatCreate,
    EscalateRequest,
    FeedbackRead,
    IntentLabel,
    IntentLabelRead,
    IntentRow,
    IntentsRead,
    NpsCreate,
    Point,
    RatingCreate,
    ReportRead,
    ResolveRequest,
    ResponseTimeRead,
    SlaRead,
    SummaryRead,
    TimeseriesRead,
)
from chatlens.auth.deps import AdminUser, CurrentUser
from chatlens.auth.service import Principal
from chatlens.chat import conversations
from chatlens.chat.schemas import ConversationRead, Platform
from chatlens.db.base import utcnow
from chatlens.db.session import SessionDep, SessionMakerDep
from chatlens.errors import ValidationFailed
from chatlens.inference.deps import BackendDep
from chatlens.inference.factory import intent_names
from chatlens.models import FeedbackKind
from chatlens.observability.deps import MetricsDep, RequestStatsDep
from chatlens.responses import errors
from chatlens.state import SettingsDep

router = APIRouter(prefix="/api", tags=["feedback"], responses=errors(401, 404, 422))


ProjectId = Annotated[str | None, Query(pattern=r"^[a-z0-9_-]{1,64}$")]


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


@router.get("/sla", response_model=SlaRead, tags=["analytics"], responses=errors(403))
async def read_sla(
    session: SessionDep,
    sessionmaker: SessionMakerDep,
    stats: RequestStatsDep,
    settings: SettingsDep,
    _: AdminUser,
    window: Annotated[str, Query(description="e.g. 30d, 12h, 90m (at most 366d)")] = "30d",
) -> SlaRead:
    """Availability (non-5xx share) and response time against the SLA targets, every replica
    counted (admins)."""
    result = await sla.current(
        session,
        stats=stats,
        sessionmaker=sessionmaker,
        window=window,
        uptime_target=settings.sla_uptime_target,
        response_time_target=settings.sla_response_time_target,
    )
    return SlaRead(
        window=result.window,
        start=result.start,
        end=result.end,
        requests=result.requests,
        availability=AvailabilityRead(
            current=result.availability,
            target=result.availability_target,
            compliant=result.availability_compliant,
            errors=result.errors,
            error_budget_remaining=result.error_budget_remaining,
        ),
        response_time=ResponseTimeRead(
            mean_seconds=result.mean_seconds,
            p95_seconds=result.p95_seconds,
            target_seconds=result.response_time_target,
            compliant=result.response_time_compliant,
        ),
    )


async def clock() -> datetime:
    """Now, for the default range and the days a report may judge; tests override it."""
    return utcnow()


NowDep = Annotated[datetime, Depends(clock)]
RANGE_DAYS = 30


@dataclass(frozen=True)
class DateRange:
    """The `start`/`end` query parameters with their defaults, and which ones were sent."""

    start: date
    end: date
    project_id: str | None
    platform: str | None
    start_sent: bool
    end_sent: bool

    def filters(self, *, max_range: timedelta | None = MAX_RANGE) -> Filters:
        """The range's filters; an error names a parameter the caller sent."""
        # Only `start` sent: the default `end` is not the caller's to fix.
        defaulted_end = self.start_sent and not self.end_sent
        if self.end <= self.start:
            if defaulted_end:
                raise ValidationFailed(
                    f"start: must be before end, which defaults to {self.end} (tomorrow)"
                )
            raise ValidationFailed("end: must be after start (end is exclusive)")
        if max_range is not None and self.end - self.start > max_range:
            blamed = "start" if defaulted_end else "end"
            raise ValidationFailed(f"{blamed}: a range covers at most {max_range.days} days")
        return Filters.from_dates(
            self.start, self.end, self.project_id, self.platform, max_range=max_range
        )


async def date_range(
    now: NowDep,
    start: Annotated[
        date | None, Query(description="First day (UTC), inclusive (default: `end` - 30 days)")
    ] = None,
    end: Annotated[
        date | None, Query(description="Last day (UTC), exclusive (default: tomorrow)")
    ] = None,
    project_id: ProjectId = None,
    platform: Platform | None = None,
) -> DateRange:
    """The analytics range: default the last 30 days, today included."""
    last = end or (now.astimezone(UTC).date() + timedelta(days=1))
    first = start or (last - timedelta(days=RANGE_DAYS))
    return DateRange(first, last, project_id, platform, start is not None, end is not None)


async def range_filters(dates: Annotated[DateRange, Depends(date_range)]) -> Filters:
    """A range the summaries may cover: at most 366 days."""
    return dates.filters()


async def export_filters(dates: Annotated[DateRange, Depends(date_range)]) -> Filters:
    """A range to export: any length, the rows are streamed."""
    return dates.filters(max_range=None)


RangeDep = Annotated[Filters, Depends(range_filters)]
ExportRangeDep = Annotated[Filters, Depends(export_filters)]


@router.get(
    "/analytics/summary", response_model=SummaryRead, tags=["analytics"], responses=errors(403)
)
async def read_summary(
    session: SessionDep,
    _: AdminUser,
    filters: RangeDep,
) -> SummaryRead:
    """The support numbers of a range (default: the last 30 days): AI, business, cost,
    technical. Formulas: docs/analytics.md (admins)."""
    return SummaryRead.model_validate(await summary.summary(session, filters))


@router.get(
    "/analytics/intents", response_model=IntentsRead, tags=["analytics"], responses=errors(403)
)
async def read_intents(
    session: SessionDep,
    _: AdminUser,
    filters: RangeDep,
) -> IntentsRead:
    """Per intent, most frequent first: turns, share, confidence, escalation rate, labeled
    accuracy, positive ratings — the top intents and their problems (admins)."""
    rows = await summary.intents(session, filters)
    return IntentsRead(start=filters.start, end=filters.end, intents=[IntentRow(**r) for r in rows])


@router.get(
    "/analytics/timeseries",
    response_model=TimeseriesRead,
    tags=["analytics"],
    responses=errors(403),
)
async def read_timeseries(
    session: SessionDep,
    _: AdminUser,
    metric: Annotated[str, Query(description="e.g. turns, avg_response_ms, csat, nps, cost_usd")],
    filters: RangeDep,
    interval: timeseries.Interval = "day",
) -> TimeseriesRead:
    """One summary number per hour, day or week of the range, empty intervals included
    (admins)."""
    points = await timeseries.timeseries(session, filters, metric=metric, interval=interval)
    return TimeseriesRead(
        metric=metric,
        interval=interval,
        points=[Point(start=moment, value=value) for moment, value in points],
    )


@router.get(
    "/analytics/export",
    tags=["analytics"],
    responses={
        **errors(403),
        200: {
            "description": "The rows as a file download (CSV, JSON lines or XLSX)",
            "content": {
                media: {"schema": {"type": "string"}} for media in export.MEDIA_TYPES.values()
            },
        },
    },
)
async def export_rows(
    session: SessionDep,
    sessionmaker: SessionMakerDep,
    _: AdminUser,
    dataset: export.Dataset,
    filters: ExportRangeDep,
    format: export.Format = "csv",
    start_date: Annotated[str | None, Query(include_in_schema=False)] = None,
    end_date: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> StreamingResponse:
    """A dataset of a range (default: the last 30 days; any length), streamed as it is read:
    `conversation_metrics` (one row per answer, ready for ClickHouse), `conversations` or
    `messages` (admins)."""
    # The range's old names: refused rather than ignored, which would export another range.
    if start_date is not None or end_date is not None:
        old = "start_date" if start_date is not None else "end_date"
        raise ValidationFailed(f"{old}: renamed; the range is `start` and `end`")
    download = await export.download(
        session, sessionmaker, dataset=dataset, filters=filters, fmt=format
    )
    return StreamingResponse(
        download.chunks,
        media_type=download.media_type,
        headers={"Content-Disposition": f'attachment; filename="{download.name}"'},
    )


@router.get(
    "/analytics/report", response_model=ReportRead, tags=["analytics"], responses=errors(403)
)
async def read_report(
    session: SessionDep,
    _: AdminUser,
    now: NowDep,
    period: report.Period = "week",
    day: Annotated[
        date | None, Query(alias="date", description="A day of the period (default: today)")
    ] = None,
    project_id: ProjectId = None,
    platform: Platform | None = None,
) -> ReportRead:
    """The period's summary, each number's change against the period before, and anomalous
    days (more than 3 standard deviations from the trailing 28-day mean; only days that are
    over, and only days with data) (admins)."""
    data = await report.report(
        session,
        period=period,
        day=day or now.astimezone(UTC).date(),
        project_id=project_id,
        platform=platform,
        now=now,
    )
    return ReportRead.model_validate(data)
