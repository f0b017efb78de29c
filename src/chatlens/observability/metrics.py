"""The Prometheus catalogue: every metric chatlens exposes is declared here, once.

docs/metrics.md describes each of them; a test fails when the two disagree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    multiprocess,
)
from prometheus_client import Counter as Counter
from prometheus_client import Gauge as Gauge
from prometheus_client import Histogram as Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase

from chatlens.observability.labels import OTHER as OTHER
from chatlens.observability.labels import LabelBound
from chatlens.observability.workers import forget_dead_workers
from chatlens.settings import Settings, load_settings

UNMATCHED_ROUTE = "__unmatched__"
BUILTIN_MODEL = "builtin-kb"
# The bot's own escalation reasons and the API's default; callers may send others.
ESCALATION_REASONS = ("user_request", "low_confidence", "backend_error", "manual")
_MAX_ESCALATION_REASONS = 20
# Why a request was refused for its credentials (chatlens.auth.failures).
AUTH_FAILURE_REASONS = ("missing", "malformed", "unknown_key", "revoked", "external_refused")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


# A minute to three days: chat support resolves in minutes, tickets in days.
RESOLUTION_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 259200)


# How a turn ended, whatever its HTTP status said: answered; rejected (the client's request,
# a 4xx); failed by the upstream model, or by chatlens; cut by the client leaving; or by a
# shutdown. The failures are those the availability SLO counts.
TURN_OUTCOMES = (
    "answered",
    "rejected",
    "failed_upstream",
    "failed_internal",
    "client_disconnected",
    "interrupted",
)
TURN_FAILURES = ("failed_upstream", "failed_internal", "interrupted")


M = TypeVar("M", prometheus_client.Counter, prometheus_client.Gauge, prometheus_client.Histogram)


class Labelled(Generic[M]):
    """A labelled metric whose children are bound once and kept.

    `labels()` of prometheus_client converts and checks the values and takes the metric's
    lock on every call, and a chat turn makes nine of them; the child it returns is the
    same object each time. Here each child is bound once through that public `labels()`
    and then handed out from a dict. Label values are bounded (see docs/metrics.md), and so
    is the dict. A label that callers or an upstream choose (a project, a model) has a
    `LabelBound`: values beyond it are counted under `other`.
    """

    __slots__ = ("_bounds", "_children", "labelnames", "metric")

    def __init__(
        self,
        kind: type[M],
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        bounds: Mapping[str, LabelBound] | None = None,
        **kwargs: Any,
    ) -> None:
        self.labelnames = tuple(labelnames)
        self.metric: M = kind(name, documentation, self.labelnames, **kwargs)
        self._children: dict[tuple[str, ...], M] = {}
        self._bounds = tuple(
            (self.labelnames.index(label), bound) for label, bound in (bounds or {}).items()
        )

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> M:
        if labelkwargs:
            labelvalues = tuple(labelkwargs[name] for name in self.labelnames)
            labelkwargs = {}
        child = self._children.get(labelvalues)
        if child is not None:
            return child
        given = labelvalues
        if self._bounds:
            values = list(labelvalues)
            for index, bound in self._bounds:
                values[index] = bound(values[index])
            labelvalues = tuple(values)
        child = self.metric.labels(*labelvalues)
        # Only plain strings are keys: True == 1 == 1.0, yet each is a label value of its own.
        if len(self._children) < 10_000 and all(type(value) is str for value in given):
            self._children[given] = child
        return child

    @property
    def max_series(self) -> int | None:
        """The most series the bounded labels allow (None: no label of it is bounded)."""
        if not self._bounds:
            return None
        total = 1
        for _, bound in self._bounds:
            total *= bound.max_values
        return total

    def remove(self, *labelvalues: Any) -> None:
        self._children.clear()
        self.metric.remove(*labelvalues)

    def clear(self) -> None:
        self._children.clear()
        self.metric.clear()


def multiprocess_dir(settings: Settings | None = None) -> str | None:
    """The directory prometheus_client's multiprocess mode writes to, when it is on
    (`PROMETHEUS_MULTIPROC_DIR`, through the settings)."""
    directory = (settings if settings is not None else load_settings()).metrics_multiprocess_dir
    return str(directory) if directory is not None else None


class Metrics:
    """Every metric, registered on one registry (one per application)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        settings: Settings | None = None,
    ) -> None:
        """`settings` say whether prometheus_client runs in multiprocess mode (read from
        the environment when not given)."""
        settings = settings if settings is not None else load_settings()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir(settings)
        r = self.registry
        # Labels whose values callers or an upstream choose (docs/metrics.md, "Cardinality").
        self.projects = LabelBound(
            ["default", *settings.metrics_project_list], cap=settings.metrics_max_projects
        )
        self.models = LabelBound([settings.model, BUILTIN_MODEL], cap=settings.metrics_max_models)
        self.escalation_reasons = LabelBound(ESCALATION_REASONS, cap=_MAX_ESCALATION_REASONS)
        project = {"project_id": self.projects}
        model = {"model": self.models}

        # HTTP, from the ASGI middleware; route is the template, never the raw path.
        self.http_requests = Labelled(
            Counter,
            "http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_request_duration = Labelled(
            Histogram,
            "http_request_duration_seconds",
            "Time to answer an HTTP request (event streams: to the first body byte).",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_requests_in_progress = Labelled(
            Gauge,
            "http_requests_in_progress",
            "HTTP requests being answered now.",
            ["method", "route"],
            multiprocess_mode="livesum",
            registry=r,
        )

        # The support-bot metrics whose names the original requirements fix.
        self.chat_requests = Labelled(
            Counter,
            "chat_requests_total",
            "Turns sent to the model (customer messages and regenerations), by project, platform.",
            ["project_id", "platform"],
            bounds=project,
            registry=r,
        )
        self.chat_turns = Labelled(
            Counter,
            "chat_turns_total",
            "Turns ended, by outcome and whether they streamed, whatever the HTTP status.",
            ["outcome", "stream"],
            registry=r,
        )
        for outcome in TURN_OUTCOMES:  # every series from 0: a rate exists before a failure
            for stream in ("true", "false"):
                self.chat_turns.labels(outcome, stream)
        self.conversations = Labelled(
            Counter,
            "conversations_total",
            "Conversations started, by project and platform.",
            ["project_id", "platform"],
            bounds=project,
            registry=r,
        )
        self.messages = Labelled(
            Counter,
            "messages_total",
            "Assistant answers stored (complete, cut off or failed), by platform and intent.",
            ["platform", "intent"],
            registry=r,
        )
        self.errors = Labelled(
            Counter,
            "errors_total",
            "Errors, by type and by the service that failed (api, ai, db, auth).",
            ["error_type", "service"],
            registry=r,
        )
        self.auth_failures = Labelled(
            Counter,
            "auth_failures_total",
            "Requests refused for their credentials, by reason.",
            ["reason"],
            registry=r,
        )
        # Each reason at 0 from the start: a first burst is an increase that rate() sees.
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)
        self.response_time = Labelled(
            Histogram,
            "response_time_seconds",
            "Time the AI took to produce a whole answer, by service and endpoint.",
            ["service", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active_sessions = Gauge(
            "active_sessions",
            "Conversations with a message in the active window (default 15 minutes), "
            "read from the database.",
            multiprocess_mode="livemax",
            registry=r,
        )

        # AI.
        self.ai_time_to_first_token = Labelled(
            Histogram,
            "ai_time_to_first_token_seconds",
            "Time from calling the model to its first token.",
            ["model"],
            bounds=model,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ai_tokens = Labelled(
            Counter,
            "ai_tokens_total",
            "Tokens used by the model, by type (prompt or completion).",
            ["model", "type"],
            bounds=model,
            registry=r,
        )
        self.ai_cost = Labelled(
            Counter,
            "ai_cost_usd_total",
            "Cost of model calls in US dollars.",
            ["model", "project_id"],
            bounds={**model, **project},
            registry=r,
        )
        self.intent_confidence = Labelled(
            Histogram,
            "intent_confidence",
            "Confidence of the detected intent of each answered message.",
            ["intent"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.escalations = Labelled(
            Counter,
            "escalations_total",
            "Conversations handed to a human operator, by platform and reason.",
            ["platform", "reason"],
            bounds={"reason": self.escalation_reasons},
            registry=r,
        )
        # Support outcomes.
        self.feedback = Labelled(
            Counter,
            "feedback_total",
            "Feedback received: kind rating (value up|down), csat (1-5) or nps (0-10).",
            ["kind", "value"],
            registry=r,
        )
        self.negative_feedback = Labelled(
            Counter,
            "negative_feedback_total",
            "Feedback comments containing a critical word (fraud, lawyer, ...), by kind.",
            ["kind"],
            registry=r,
        )
        self.intent_labels = Labelled(
            Counter,
            "intent_labels_total",
            "Operators' intent labels on answers, by detected intent and whether it was correct.",
            ["intent", "correct"],
            registry=r,
        )
        self.satisfaction_score = Histogram(
            "satisfaction_score",
            "CSAT scores given (1-5).",
            buckets=(1, 2, 3, 4, 5),
            registry=r,
        )
        self.nps_score = Histogram(
            "nps_score",
            "NPS scores given (0-10).",
            buckets=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
            registry=r,
        )
        self.conversations_resolved = Labelled(
            Counter,
            "conversations_resolved_total",
            "Conversations closed, by outcome (resolved, converted, abandoned) and platform.",
            ["outcome", "platform"],
            registry=r,
        )
        self.conversation_resolution = Histogram(
            "conversation_resolution_seconds",
            "From a conversation's start to its resolution.",
            buckets=RESOLUTION_BUCKETS,
            registry=r,
        )
        self.sse_streams_active = Gauge(
            "sse_streams_active",
            "Server-sent event streams open now.",
            multiprocess_mode="livesum",
            registry=r,
        )
        # The chat pipeline's group commit (chatlens.db.batch): writes per transaction.
        self.db_commit_writes = Histogram(
            "db_commit_writes",
            "Writes the group commit committed together in one transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.upstream_values_rejected = Labelled(
            Counter,
            "upstream_values_rejected_total",
            "Values from the upstream model refused as out of bounds, by field.",
            ["field"],
            registry=r,
        )
        self.inference_up = Labelled(
            Gauge,
            "inference_up",
            "1 when the inference backend answers its health check, else 0.",
            ["backend"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.app_info = Labelled(
            Gauge,
            "app_info",
            "Always 1; labels carry the running version and environment.",
            ["version", "environment"],
            multiprocess_mode="max",
            registry=r,
        )

        # The database as the requests see it (chatlens.db.availability).
        self.db_up = Gauge(
            "db_up",
            "1 while the database answers, 0 from a refused request until a probe reaches it.",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.db_unavailable_requests = Counter(
            "db_unavailable_requests_total",
            "Requests answered 503 database_unavailable because the database was unreachable.",
            registry=r,
        )

        if self.multiprocess_dir is None:
            # The default collectors describe this one process; in multiprocess mode they
            # could not be summed across workers, so they are left out there.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format the scraper asked for (OpenMetrics or text)."""
        registry = self.registry
        if self.multiprocess_dir is not None:
            forget_dead_workers(self.multiprocess_dir)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type

    def declared(self) -> Iterator[tuple[MetricWrapperBase, tuple[str, ...]]]:
        """Every metric of the catalogue, with its label names."""
        for value in vars(self).values():
            if isinstance(value, Labelled):
                yield value.metric, value.labelnames
            elif isinstance(value, MetricWrapperBase):
                yield value, ()
