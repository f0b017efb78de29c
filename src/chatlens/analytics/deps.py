"""Dependency aliases for recording feedback: FeedbackDep."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from chatlens.analytics.service import CriticalWords, FeedbackContext
from chatlens.observability.deps import MetricsDep
from chatlens.state import state_of


async def get_feedback_context(request: Request, metrics: MetricsDep) -> FeedbackContext:
    return FeedbackContext(critical=state_of(request).get(CriticalWords), metrics=metrics)


FeedbackDep = Annotated[FeedbackContext, Depends(get_feedback_context)]
