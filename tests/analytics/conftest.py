"""The analytics' clock, fixed by a test: what "today" and "the days that are over" mean."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from chatlens.analytics.deps import clock as analytics_clock


@dataclass
class Clock:
    now: datetime


@pytest.fixture
def clock(app: Any) -> Iterator[Clock]:
    """`clock.now` is what the analytics routes take as now (default: 2026-01-07 12:00 UTC)."""
    fixed = Clock(datetime(2026, 1, 7, 12, tzinfo=UTC))
    app.dependency_overrides[analytics_clock] = lambda: fixed.now
    yield fixed
    app.dependency_overrides.pop(analytics_clock, None)
