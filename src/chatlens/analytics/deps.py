"""Dependency aliases of the analytics routes: FeedbackDep, the clock, date ranges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Query, Request

from chatlens.analytics.filters import MAX_RANGE, Filters
from chatlens.analytics.service import CriticalWords, FeedbackContext
from chatlens.chat.schemas import Platform
from chatlens.chat.schemas import ProjectId as ProjectIdText
from chatlens.db.base import utcnow
from chatlens.errors import ValidationFailed
from chatlens.fields import Day
from chatlens.observability.deps import MetricsDep
from chatlens.state import state_of


async def get_feedback_context(request: Request, metrics: MetricsDep) -> FeedbackContext:
    return FeedbackContext(critical=state_of(request).get(CriticalWords), metrics=metrics)


FeedbackDep = Annotated[FeedbackContext, Depends(get_feedback_context)]

ProjectId = Annotated[ProjectIdText | None, Query()]


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
        Day | None, Query(description="First day (UTC), inclusive (default: `end` - 30 days)")
    ] = None,
    end: Annotated[
        Day | None, Query(description="Last day (UTC), exclusive (default: tomorrow)")
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
