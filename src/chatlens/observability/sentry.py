"""Sentry: ERROR log lines become events, tagged with the request and scrubbed like the logs."""

from __future__ import annotations

import contextlib
import sys
from contextvars import ContextVar
from types import TracebackType
from typing import Any, cast

import sentry_sdk
from opentelemetry import trace
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration
from sentry_sdk.types import Breadcrumb, BreadcrumbHint, Event, Hint, SpanJSON
from sentry_sdk.utils import event_from_exception
from structlog.typing import EventDict, WrappedLogger

from chatlens.observability.logging import context as log_context
from chatlens.observability.redaction import redact
from chatlens.settings import Settings

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_EVENT_LEVELS = {"ERROR": "error", "CRITICAL": "fatal"}
# Identifiers, never personal data; a random hex id can still look like a card number.
_NOT_REDACTED = frozenset(
    {"event_id", "trace_id", "span_id", "parent_span_id", "request_id", "timestamp"}
)
# Fields of a line that Sentry already carries elsewhere (tags, user, release, the exception).
_NOT_IN_CONTEXT = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "service",
        "version",
        "environment",
        "request_id",
        "trace_id",
        "span_id",
        "user_id",
        "exception",
        "exc_info",
        "_record",
        "_from_structlog",
    }
)
_MECHANISM = {"type": "logging", "handled": True}
# Request headers an event may carry (an allow list): none names or locates a person.
_SENT_HEADERS = ("accept", "content-type", "content-length", "user-agent", "x-request-id")
# Set while a line is being reported: anything Sentry logs meanwhile must not report again.
_reporting: ContextVar[bool] = ContextVar("chatlens_sentry_reporting", default=False)


def init_sentry(settings: Settings) -> bool:
    """Start Sentry for this process when SENTRY_DSN is set, stop it otherwise; True if on."""
    # A process configures once; tests build several apps, and each decides afresh.
    close_sentry()
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        release=settings.version,
        environment=settings.environment.value,
        # 0 is None to the SDK: no unsampled transaction per request, nor a client report
        # counting each one; OpenTelemetry is the tracer.
        traces_sample_rate=settings.sentry_traces_sample_rate or None,
        # What the SDK may collect by itself: nothing that names or quotes a customer.
        # Request headers by allow list: the client's address (X-Forwarded-For, Forwarded,
        # X-Real-IP), the Referer and any credential are never sent, whatever a proxy adds.
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_headers": {"request": {"mode": "allowlist", "terms": list(_SENT_HEADERS)}},
            "http_bodies": [],
            "url_query_params": {"mode": "off"},
            "gen_ai": {"inputs": False, "outputs": False},
            "database_query_data": False,
            "stack_frame_variables": False,
        },
        # OpenTelemetry already instruments SQLAlchemy, httpx and the rest: Sentry patches
        # nothing beyond the web framework, and adds no second set of spans.
        auto_enabling_integrations=False,
        integrations=[
            # Error responses are reported by the ERROR line the service logs for them,
            # not a second time by the framework integration.
            StarletteIntegration(failed_request_status_codes=set()),
            FastApiIntegration(failed_request_status_codes=set()),
            # Log lines reach Sentry through capture_log_errors alone, the standard
            # library's included: one path, so one event per failure.
            LoggingIntegration(level=None, event_level=None),
        ],
        before_send=scrub_event,
        before_send_span=scrub_span,
        before_breadcrumb=scrub_breadcrumb,
    )
    return True


def close_sentry() -> None:
    """Send what is queued and stop reporting (a no-op when Sentry is off)."""
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=2)
        sentry_sdk.get_global_scope().set_client(None)


def capture_log_errors(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: an ERROR or CRITICAL line becomes one Sentry event."""
    level = _EVENT_LEVELS.get(event_dict.get("level", ""))
    if level is None or _reporting.get():
        return event_dict
    if str(event_dict.get("logger", "")).startswith("sentry_sdk"):
        return event_dict  # its own transport errors would loop back into Sentry
    if not sentry_sdk.get_client().is_active():
        return event_dict
    token = _reporting.set(True)
    try:
        # Reporting is best effort: a failure here must not cost the log line itself.
        with contextlib.suppress(Exception):
            _report(event_dict, level)
    finally:
        _reporting.reset(token)
    return event_dict


def _report(event_dict: EventDict, level: str) -> None:
    exc_info = _exc_info(event_dict)
    hint: Hint = {}
    if exc_info is not None:
        event, hint = event_from_exception(exc_info, mechanism=_MECHANISM)
    else:
        event = {}
        rendered = event_dict.get("exception")
        if isinstance(rendered, list) and rendered:
            event["exception"] = {"values": _from_rendered(rendered)}
    message = str(event_dict.get("event", ""))
    event["level"] = cast(Any, level)
    event["logger"] = str(event_dict.get("logger", ""))
    event["logentry"] = {"message": message, "formatted": message, "params": []}
    fields = {k: v for k, v in event_dict.items() if k not in _NOT_IN_CONTEXT}
    event["contexts"] = {**event.get("contexts", {}), "log": fields}
    sentry_sdk.capture_event(event, hint=hint)


def _exc_info(event_dict: EventDict) -> ExcInfo | None:
    """The exception a line carries, as an object, so Sentry gets frames and causes."""
    given = event_dict.get("exc_info")
    if isinstance(given, BaseException):
        return type(given), given, given.__traceback__
    if isinstance(given, tuple):
        return cast(ExcInfo, given) if given and given[0] is not None else None
    rendered = event_dict.get("exception")
    if not given and not isinstance(rendered, list):
        return None
    # ExceptionRenderer has replaced exc_info by a dict before this processor runs. Lines
    # are logged inside `except`, so the exception being handled is, as a rule, that one.
    kind, exc, tb = sys.exc_info()
    if kind is None or exc is None:
        return None
    if isinstance(rendered, list) and rendered and isinstance(rendered[0], dict):
        head = rendered[0]
        if head.get("exc_type") != kind.__name__ or head.get("exc_value") != str(exc):
            return None
    return kind, exc, tb


def _from_rendered(stacks: list[Any]) -> list[dict[str, Any]]:
    """Sentry exception values from structlog's dict form, when the object is gone."""
    values: list[dict[str, Any]] = []
    # structlog lists the raised exception first, then its causes; Sentry wants it last.
    for stack in reversed([s for s in stacks if isinstance(s, dict)]):
        frames = [
            {
                "filename": frame.get("filename"),
                "abs_path": frame.get("filename"),
                "lineno": frame.get("lineno"),
                "function": frame.get("name"),
            }
            for frame in stack.get("frames", [])
            if isinstance(frame, dict)
        ]
        values.append(
            {
                "type": stack.get("exc_type"),
                "value": stack.get("exc_value"),
                "stacktrace": {"frames": frames},
            }
        )
    if values:
        values[-1]["mechanism"] = _MECHANISM
    return values


def scrub_event(event: Event, _: Hint) -> Event:
    """The event tagged with the request, its user as an id alone, every string redacted."""
    fields = log_context()
    scrubbed = cast(Event, _scrub(event))
    tags = scrubbed.setdefault("tags", {})
    request_id = fields.get("request_id")
    if request_id:
        tags["request_id"] = str(request_id)
    trace_id = fields.get("trace_id") or _current_trace_id()
    if trace_id:
        tags["trace_id"] = str(trace_id)
    # Never an e-mail, a name or an IP address: only the opaque id of the API key's owner.
    user_id = fields.get("user_id")
    if user_id:
        scrubbed["user"] = {"id": str(user_id)}
    else:
        scrubbed.pop("user", None)
    return scrubbed


def scrub_span(span: SpanJSON, _: Hint) -> SpanJSON:
    """A span (when Sentry's own tracing is on) with its name and attributes redacted."""
    return cast(SpanJSON, _scrub(span))


def scrub_breadcrumb(crumb: Breadcrumb, _: BreadcrumbHint) -> Breadcrumb:
    """The breadcrumb with every string redacted."""
    return cast(Breadcrumb, _scrub(crumb))


def _scrub(value: Any, key: str | None = None) -> Any:
    if isinstance(value, str):
        return value if key in _NOT_REDACTED else redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
