"""A period's report: its summary, the change against the period before, and anomalies."""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.analytics import summary as summaries
from chatlens.analytics.filters import Filters
from chatlens.analytics.timeseries import observed
from chatlens.db.base import utcnow

Period = Literal["day", "week", "month"]
HISTORY_DAYS = 28
MIN_HISTORY = 7
THRESHOLD_SIGMA = 3.0
# Daily numbers watched for anomalies: volume, speed, satisfaction, escalation, cost, errors.
WATCHED = ("turns", "avg_response_ms", "csat", "escalation_rate", "cost_usd", "error_rate")


def bounds(period: Period, day: date) -> tuple[date, date]:
    """The period holding `day`: that day, its Monday-to-Sunday week, or its month."""
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


def previous_bounds(period: Period, start: date) -> tuple[date, date]:
    return bounds(period, start - timedelta(days=1))


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) or value is None:
            out[f"{prefix}{key}"] = value
    return out


def changes(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For every number: now, before, the difference and the relative change."""
    now = _leaves({k: current[k] for k in ("ai", "business", "cost", "technical")})
    before = _leaves({k: previous[k] for k in ("ai", "business", "cost", "technical")})
    result = {}
    for name, value in now.items():
        old = before.get(name)
        delta = None if value is None or old is None else value - old
        relative = None if delta is None or not old else delta / abs(old)
        result[name] = {"current": value, "previous": old, "change": delta, "change_pct": relative}
    return result


def last_judged_day(now: datetime) -> date:
    """The latest day whose whole 24 hours are over: today is still being counted."""
    return now.astimezone(UTC).date() - timedelta(days=1)


async def anomalies(
    session: AsyncSession, f: Filters, start: date, end: date, *, now: datetime
) -> list[dict[str, Any]]:
    """Days of the period whose value is more than 3 standard deviations from the mean of the
    28 days before it, judged only with at least 7 of those days having a value.

    Only days that are over are judged: today and later days have no final value. A day
    without rows for a number has no value for it (not 0): it is neither judged nor part of
    a mean, so a quiet Sunday or a gap in the data is never an anomalous drop.
    """
    stop = min(end, last_judged_day(now) + timedelta(days=1))
    if stop <= start:
        return []
    history = Filters.from_dates(
        start - timedelta(days=HISTORY_DAYS), stop, f.project_id, f.platform
    )
    found = []
    for metric in WATCHED:
        points = await observed(session, history, metric=metric, interval="day")
        values = {moment.date(): value for moment, value in points.items() if value is not None}
        for day in sorted(values):
            if day < start:
                continue
            value = values[day]
            window = [
                values[before]
                for before in (day - timedelta(days=n) for n in range(1, HISTORY_DAYS + 1))
                if before in values
            ]
            if len(window) < MIN_HISTORY:
                continue
            mean = statistics.fmean(window)
            spread = statistics.pstdev(window)
            if spread == 0:
                continue
            z = (value - mean) / spread
            if abs(z) > THRESHOLD_SIGMA:
                found.append(
                    {
                        "metric": metric,
                        "date": day.isoformat(),
                        "value": value,
                        "mean": mean,
                        "stdev": spread,
                        "z": z,
                    }
                )
    return found


async def report(
    session: AsyncSession,
    *,
    period: Period,
    day: date,
    project_id: str | None = None,
    platform: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """`now` (default: the clock) decides which days are over and may be judged anomalous."""
    start, end = bounds(period, day)
    before_start, before_end = previous_bounds(period, start)
    current_filters = Filters.from_dates(start, end, project_id, platform)
    previous_filters = Filters.from_dates(before_start, before_end, project_id, platform)
    current = await summaries.summary(session, current_filters)
    previous = await summaries.summary(session, previous_filters)
    found = await anomalies(session, current_filters, start, end, now=now or utcnow())
    return {
        "period": period,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "previous_start": before_start.isoformat(),
        "previous_end": before_end.isoformat(),
        "summary": current,
        "changes": changes(current, previous),
        "anomalies": found,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return f"{value:,}"


def markdown(data: dict[str, Any]) -> str:
    """The report as Markdown, for a chat message or an e-mail."""
    lines = [
        f"# chatlens report: {data['period']} {data['start']} to {data['end']} (exclusive)",
        "",
        f"Compared with {data['previous_start']} to {data['previous_end']}.",
        "",
        "| number | now | before | change |",
        "|---|---|---|---|",
    ]
    for name, change in data["changes"].items():
        pct = change["change_pct"]
        shown = "—" if pct is None else f"{pct:+.1%}"
        lines.append(
            f"| {name} | {_fmt(change['current'])} | {_fmt(change['previous'])} | {shown} |"
        )
    lines += ["", "## Anomalies", ""]
    if not data["anomalies"]:
        lines.append("None: no day was more than 3 standard deviations from its 28-day mean.")
    for item in data["anomalies"]:
        lines.append(
            f"- {item['date']} {item['metric']}: {_fmt(item['value'])} "
            f"(28-day mean {_fmt(item['mean'])}, {item['z']:+.1f} σ)"
        )
    return "\n".join(lines) + "\n"
