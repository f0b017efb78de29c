"""Structured logging: one JSON object per line, ours and every library's alike.

The service writes its lines to stdout, for the container's log shipper; the other commands
write theirs to stderr, leaving stdout to their result.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, Protocol

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from chatlens.observability.redaction import redact, redact_value

# Fields that carry identifiers or structure, never personal data: not worth a regex pass.
# `event` is not among them: a library's line puts its whole message there.
_NOT_REDACTED = frozenset(
    {
        "timestamp",
        "level",
        "logger",
        "service",
        "version",
        "environment",
        "request_id",
        "trace_id",
        "span_id",
        "method",
        "route",
        "status",
        "duration_ms",
        "client_ip",  # an address, which none of the patterns masks: no pass needed
    }
)
_CONTAINERS = frozenset({dict, list, tuple})
_SCALARS = frozenset({int, float, bool, type(None)})
_LEVELS = {"exception": "ERROR", "warn": "WARNING", "fatal": "CRITICAL"}


# (whole second, its "YYYY-MM-DDTHH:MM:SS" in UTC): lines of the same second share it.
_second: tuple[int, str] = (-1, "")


# The fields bound to every line of the current request, as one mapping that is replaced,
# never changed in place: a task started from the request copies the context, and what it
# binds stays its own. structlog.contextvars keeps a variable per key instead, and its merge
# walks every context variable of the process (OpenTelemetry's, anyio's, ...) on each line.
_bound: ContextVar[Mapping[str, Any]] = ContextVar(
    "chatlens_log_fields", default=MappingProxyType({})
)


def _merge_bound(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    bound = _bound.get()
    return {**bound, **event_dict} if bound else event_dict


def _timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # UTC, milliseconds, "Z", the second formatted once: far cheaper than isoformat().
    global _second
    now = time.time()
    whole = int(now)
    second, text = _second
    if whole != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    event_dict["timestamp"] = f"{text}.{int((now - whole) * 1000):03d}Z"
    return event_dict


def _level(_: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    event_dict["level"] = _LEVELS.get(method_name) or method_name.upper()
    return event_dict


def _trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Inside a request the middleware has bound the server span's ids already.
    if "trace_id" in event_dict:
        return event_dict
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


# Field name -> whether its value goes through redaction, decided once per name.
_redacted_keys: dict[str, bool] = {}


def _redacted_key(key: str) -> bool:
    redacted = _redacted_keys.get(key)
    if redacted is None:
        # `*_id` fields hold uuids and hex ids: their digits would send each through every
        # pattern for nothing.
        redacted = key not in _NOT_REDACTED and not key.endswith("_id")
        if len(_redacted_keys) < 1024:  # names come from code, but stay bounded
            _redacted_keys[key] = redacted
    return redacted


def _redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    known = _redacted_keys
    for key, value in event_dict.items():
        kind = type(value)
        if kind is str:
            redacted = known.get(key)
            if redacted or (redacted is None and _redacted_key(key)):
                event_dict[key] = redact(value)
        elif (
            kind not in _SCALARS
            # dicts, lists and tuples, and subclasses (a str enum, say)
            and (kind in _CONTAINERS or isinstance(value, str | dict | list | tuple))
            and _redacted_key(key)
        ):
            event_dict[key] = redact_value(value)
    return event_dict


def _static_fields(fields: dict[str, str]) -> Processor:
    def add(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    return add


def _logger_name(logger: WrappedLogger, _: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


class _NamedBytesLogger(structlog.BytesLogger):
    """BytesLogger that remembers the name given to get_logger(), for the `logger` field."""

    def __init__(self, file: Any, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class _NamedBytesLoggerFactory:
    def __init__(self, file: Any) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedBytesLogger:
        return _NamedBytesLogger(self._file, str(args[0]) if args else None)


class LogStream(Protocol):
    """Where log lines go: a text file such as sys.stdout, or CurrentStderr."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class CurrentStderr:
    """sys.stderr as it is at each write, for a command's logs.

    What stands in for stderr after logging is configured still gets the lines: a progress
    bar's console, which prints them above the bar, or a test runner's capture.
    """

    def write(self, text: str | bytes, /) -> int:
        # JSON lines arrive as bytes (BytesLogger), which a stand-in may not take.
        return sys.stderr.write(text.decode() if isinstance(text, bytes) else text)

    def flush(self) -> None:
        sys.stderr.flush()


def _orjson_dumps(value: Any, **_: Any) -> bytes:
    return orjson.dumps(value, default=str)


def shared_processors(
    *, service: str, version: str, environment: str, extra: list[Processor] | None = None
) -> list[Processor]:
    """The processors every line goes through, structlog's and the standard library's."""
    return [
        _merge_bound,
        _logger_name,
        _level,
        _timestamp,
        _static_fields({"service": service, "version": version, "environment": environment}),
        _trace_context,
        structlog.processors.StackInfoRenderer(),
        # Frames without local variables: locals can hold keys and customers' data.
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        ),
        *(extra or []),
        _redact,
    ]


def configure_logging(
    *,
    level: str,
    fmt: str,
    service: str,
    version: str,
    environment: str,
    extra: list[Processor] | None = None,
    stream: LogStream | None = None,
    sql_echo: bool = False,
) -> None:
    """Configure structlog and route the standard library (uvicorn, SQLAlchemy, ...) through it.

    Lines go to `stream`, stdout by default.
    """
    out: Any = stream or sys.stdout
    numeric = logging.getLevelNamesMapping()[level]
    processors = shared_processors(
        service=service, version=version, environment=environment, extra=extra
    )
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer()
        factory: Any = structlog.PrintLoggerFactory(out)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        factory = _NamedBytesLoggerFactory(out.buffer if hasattr(out, "buffer") else out)

    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=processors,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _bytes_to_str(renderer) if fmt != "console" else renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # uvicorn installs its own handlers; send its records to ours instead. Its access log is
    # replaced by our http_request line, which knows the route, trace id and duration.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy", "alembic", "httpx"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # SQL statements only when asked for: INFO from sqlalchemy.engine is one line per query.
    logging.getLogger("sqlalchemy.engine").setLevel(
        logging.INFO if sql_echo else max(numeric, logging.WARNING)
    )
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))


def _bytes_to_str(renderer: Processor) -> Processor:
    def render(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        value = renderer(logger, name, event_dict)
        return value.decode() if isinstance(value, bytes) else str(value)

    return render


def bind(**fields: Any) -> None:
    """Add fields to every line logged for the rest of the current request."""
    _bound.set({**_bound.get(), **fields})


def start_request(fields: Mapping[str, Any]) -> Token[Mapping[str, Any]]:
    """Bind exactly these fields, dropping whatever an earlier request left in the context."""
    return _bound.set(fields)


def end_request(token: Token[Mapping[str, Any]]) -> None:
    """Restore the fields bound before the request (none, as a rule): a request served in
    its caller's task, as through an in-process transport, leaves nothing behind."""
    _bound.reset(token)


def context() -> dict[str, Any]:
    """A copy of the fields bound to the current request."""
    return dict(_bound.get())
