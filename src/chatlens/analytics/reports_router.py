"""The support numbers: SLA, summary, time series, intents, reports and exports (admins)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from chatlens.analytics import export, report, sla, summary, timeseries
from chatlens.analytics.deps import ExportRangeDep, NowDep, ProjectId, RangeDep
from chatlens.analytics.schemas import (
    AvailabilityRead,
    IntentRow,
    IntentsRead,
    Point,
    ReportRead,
    ResponseTimeRead,
    SlaRead,
    SummaryRead,
    TimeseriesRead,
)
from chatlens.auth.deps import AdminUser, AuthenticatedRoute
from chatlens.chat.schemas import Platform
from chatlens.db.session import SessionDep, SessionMakerDep
from chatlens.errors import ValidationFailed
from chatlens.fields import TEXT_SCHEMA, Day, Text
from chatlens.observability.deps import RequestStatsDep
from chatlens.responses import errors
from chatlens.state import SettingsDep

# The same prefix, tags and shared responses as the feedback routes: one API section.
router = APIRouter(
    prefix="/api",
    tags=["feedback"],
    responses=errors(401, 404, 422),
    route_class=AuthenticatedRoute,
)


@router.get("/sla", response_model=SlaRead, tags=["analytics"], responses=errors(403))
async def read_sla(
    session: SessionDep,
    sessionmaker: SessionMakerDep,
    stats: RequestStatsDep,
    settings: SettingsDep,
    _: AdminUser,
    window: Annotated[
        str,
        Query(description="e.g. 30d, 12h, 90m (at most 366d)", pattern=sla.WINDOW_PATTERN),
        TEXT_SCHEMA,
    ] = "30d",
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
    metric: Annotated[
        str,
        Query(
            description="A summary number", json_schema_extra={"enum": sorted(timeseries.SERIES)}
        ),
    ],
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
    start_date: Annotated[Text | None, Query(include_in_schema=False)] = None,
    end_date: Annotated[Text | None, Query(include_in_schema=False)] = None,
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
        Day | None, Query(alias="date", description="A day of the period (default: today)")
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
