"""The range, project and platform every analytics number is narrowed to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from chatlens.errors import ValidationFailed

MAX_RANGE = timedelta(days=366)


@dataclass(frozen=True)
class Filters:
    start: datetime  # inclusive, UTC midnight
    end: datetime  # exclusive
    project_id: str | None = None
    platform: str | None = None

    @classmethod
    def from_dates(
        cls,
        start: date,
        end: date,
        project_id: str | None,
        platform: str | None,
        *,
        max_range: timedelta | None = MAX_RANGE,
    ) -> Filters:
        """`max_range` None: any length (an export streams its rows; a summary holds them)."""
        if end <= start:
            raise ValidationFailed("end: must be after start (end is exclusive)")
        if max_range is not None and end - start > max_range:
            raise ValidationFailed(f"end: a range covers at most {max_range.days} days")
        return cls(
            start=datetime.combine(start, time.min, UTC),
            end=datetime.combine(end, time.min, UTC),
            project_id=project_id,
            platform=platform,
        )
