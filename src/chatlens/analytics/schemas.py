from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chatlens.fields import JSON_INTEGER, TEXT_SCHEMA, Text
from chatlens.models.conversation import ESCALATION_NOTE_MAX_CHARS

Comment = Annotated[Text, Field(max_length=2000)]
EscalationNote = Annotated[
    Text, StringConstraints(strip_whitespace=True, max_length=ESCALATION_NOTE_MAX_CHARS)
]


class RatingCreate(BaseModel):
    rating: Literal["up", "down"]
    comment: Comment | None = None


class CsatCreate(BaseModel):
    score: Annotated[int, Field(ge=1, le=5), JSON_INTEGER]
    comment: Comment | None = None


class NpsCreate(BaseModel):
    score: Annotated[int, Field(ge=0, le=10), JSON_INTEGER]
    comment: Comment | None = None


class FeedbackRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    conversation_id: uuid.UUID
    message_id: uuid.UUID | None
    kind: str
    score: int
    comment: str | None
    critical: bool = Field(description="The comment contains a critical word")
    trace_id: str | None = Field(description="The rated answer's trace")
    created_at: datetime
    updated_at: datetime


class IntentLabel(BaseModel):
    intent: Annotated[Text, Field(min_length=1, max_length=64)]


class IntentLabelRead(BaseModel):
    message_id: uuid.UUID
    intent: str | None = Field(description="What the bot detected")
    labeled_intent: str
    correct: bool | None = Field(description="Detected == labeled; null for no detection")


class EscalateRequest(BaseModel):
    reason: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$"), TEXT_SCHEMA] = "manual"
    note: EscalationNote | None = Field(
        None, description="Free text for the operator, beside the coded reason"
    )


class ResolveRequest(BaseModel):
    outcome: Literal["resolved", "converted", "abandoned"]


class AvailabilityRead(BaseModel):
    current: float | None = Field(description="Share of requests not answered 5xx")
    target: float
    compliant: bool | None
    errors: int
    error_budget_remaining: float | None = Field(
        description="1 - errors / allowed errors: 1 is untouched, 0 spent, below 0 overspent"
    )


class ResponseTimeRead(BaseModel):
    mean_seconds: float | None
    p95_seconds: float | None = Field(description="Interpolated from latency buckets")
    target_seconds: float
    compliant: bool | None = Field(description="p95 within the target")


class SlaRead(BaseModel):
    window: str
    start: datetime
    end: datetime
    requests: int
    availability: AvailabilityRead
    response_time: ResponseTimeRead


class AiSummary(BaseModel):
    turns: int
    avg_response_ms: float | None
    p95_response_ms: float | None
    avg_ttft_ms: float | None
    intent_accuracy: float | None
    labeled_turns: int
    positive_rating_ratio: float | None
    escalation_rate: float | None
    escalations: int


class BusinessSummary(BaseModel):
    conversations: int
    csat: float | None = Field(description="Share of CSAT responses that are 4 or 5")
    csat_mean: float | None
    csat_responses: int
    nps: float | None = Field(description="Promoters minus detractors, in points (-100..100)")
    nps_responses: int
    conversion_rate: float | None
    avg_resolution_seconds: float | None
    median_resolution_seconds: float | None
    repeat_contact_rate: float | None


class CostSummary(BaseModel):
    tokens: int
    cost_usd: float
    cost_per_conversation: float | None
    cost_per_resolved: float | None


class TechnicalSummary(BaseModel):
    requests: int
    error_rate: float | None
    availability: float | None


class SummaryRead(BaseModel):
    start: datetime
    end: datetime
    ai: AiSummary
    business: BusinessSummary
    cost: CostSummary
    technical: TechnicalSummary


class IntentRow(BaseModel):
    intent: str
    turns: int
    share: float | None
    avg_confidence: float | None
    escalation_rate: float | None = Field(description="Share of the intent's turns that escalated")
    labeled_turns: int
    accuracy: float | None = Field(description="Labeled turns detected correctly ÷ labeled turns")
    positive_rating_ratio: float | None


class IntentsRead(BaseModel):
    start: datetime
    end: datetime
    intents: list[IntentRow]


class Point(BaseModel):
    start: datetime
    value: float | None


class TimeseriesRead(BaseModel):
    metric: str
    interval: str
    points: list[Point]


class Change(BaseModel):
    current: float | None
    previous: float | None
    change: float | None = Field(description="current - previous")
    change_pct: float | None = Field(description="change / |previous|; null when previous is 0")


class Anomaly(BaseModel):
    metric: str
    date: str
    value: float
    mean: float = Field(description="Mean of the 28 days before")
    stdev: float
    z: float = Field(description="(value - mean) / stdev; reported beyond ±3")


class ReportRead(BaseModel):
    period: str
    start: str
    end: str = Field(description="Exclusive")
    previous_start: str
    previous_end: str
    summary: SummaryRead
    changes: dict[str, Change] = Field(description="Every summary number, e.g. `ai.turns`")
    anomalies: list[Anomaly]
