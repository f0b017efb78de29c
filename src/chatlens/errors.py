"""One error base for chatlens and the handlers that render every error as JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatlens.observability.context import get_request_id


class ChatlensError(Exception):
    """A failure a client should see; subclasses set status and type."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class BadRequest(ChatlensError):
    status_code = 400
    error_type = "bad_request"


class Unauthorized(ChatlensError):
    status_code = 401
    error_type = "unauthorized"

    def __init__(self, message: str = "a valid API key is required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ChatlensError):
    status_code = 403
    error_type = "forbidden"


class NotFound(ChatlensError):
    status_code = 404
    error_type = "not_found"


class Conflict(ChatlensError):
    status_code = 409
    error_type = "conflict"


class PayloadTooLarge(ChatlensError):
    status_code = 413
    error_type = "payload_too_large"


class ValidationFailed(ChatlensError):
    status_code = 422
    error_type = "validation_error"


_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """The one JSON shape of every error chatlens returns."""
    return {"error": {"type": error_type, "message": message, "request_id": get_request_id()}}


def error_response(
    status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(error_body(error_type, message)),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """One sentence naming each offending field, e.g. 'body.message: String should have ...'."""
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}")
    return "; ".join(parts)


async def _chatlens_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatlensError)
    return error_response(exc.status_code, exc.error_type, exc.message, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "validation_error", describe_validation_errors(exc.errors()))


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error_type = _HTTP_TYPES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else error_type.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = "no such route"
    return error_response(exc.status_code, error_type, message, exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render ours, validation and routing errors in the one JSON shape.

    Unexpected exceptions are turned into a JSON 500 by ObservabilityMiddleware.
    """
    app.add_exception_handler(ChatlensError, _chatlens_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
