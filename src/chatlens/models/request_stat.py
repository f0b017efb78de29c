from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from chatlens.db.base import IdMixin, Model


class RequestStat(IdMixin, Model):
    """Requests of one minute, route and status class, as one replica flushed them.

    A replica flushes every 15 s, so a minute may have several rows: readers sum them.
    `le_<ms>` are cumulative latency buckets; `count` is the +Inf one.
    """

    __tablename__ = "request_stats"
    __table_args__ = (Index("ix_request_stats_minute", "minute"),)

    minute: Mapped[datetime]
    route: Mapped[str] = mapped_column(String(255))
    status_class: Mapped[str] = mapped_column(String(3))
    count: Mapped[int]
    latency_sum_ms: Mapped[float]
    le_100: Mapped[int]
    le_250: Mapped[int]
    le_500: Mapped[int]
    le_1000: Mapped[int]
    le_2000: Mapped[int]
    le_5000: Mapped[int]
    le_10000: Mapped[int]
