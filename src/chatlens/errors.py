"""One error base for chatlens and the handlers that render every error as JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from chatlens.observability.context import get_request_id


class ChatlensError(Exception):
    """A failure a client should see; subclasses set status and type."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


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
        if err.get("type") == "string_pattern_mismatch" and "\x00" in str(err.get("input")):
            # Every text field refuses NUL by its pattern (chatlens.fields): say so in words.
            message = "must not contain the NUL character (\\u0000)"
        parts.append(f"{loc}: {message}")
    return "; ".join(parts)


# The OpenAI-compatible API (/v1) answers errors in OpenAI's shape, which its SDKs parse.
OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error_body(
    status: int, code: str, message: str, param: str | None = None
) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}`, as the OpenAI SDKs expect."""
    kind = _OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _respond(
    request: Request,
    status: int,
    error_type: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    param: str | None = None,
) -> Response:
    if request.url.path.startswith(OPENAI_PREFIX):
        return Response(
            orjson.dumps(openai_error_body(status, error_type, message, param)),
            status_code=status,
            headers=dict(headers or {}),
            media_type="application/json",
        )
    return error_response(status, error_type, message, headers)


def respond(request: Request, exc: ChatlensError) -> Response:
    """`exc` as the JSON error its route answers with (OpenAI's shape under /v1)."""
    return _respond(request, exc.status_code, exc.error_type, exc.message, exc.headers)


async def _chatlens_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatlensError)
    return respond(request, exc)


def _json_errors(exc: Exception) -> list[Any]:
    if not isinstance(exc, RequestValidationError):
        return []
    return [e for e in exc.errors() if e.get("type") == "json_invalid"]


# What the JSON decoder raises for bytes that are not JSON text at all, besides a syntax
# error (which FastAPI reports as a `json_invalid` validation error): bytes that are not
# UTF-8, and nesting deeper than the decoder's recursion limit. FastAPI answers both with a
# 400 HTTPException chained to the decoder's exception; the chain, not the detail text, is
# what tells them apart from any other 400 (tests/test_contract.py sends both).
_UNDECODABLE: dict[type[BaseException], str] = {
    UnicodeDecodeError: "not UTF-8",
    RecursionError: "nested too deeply",
}


def _undecodable_reason(exc: Exception) -> str | None:
    if not isinstance(exc, StarletteHTTPException) or exc.status_code != 400:
        return None
    cause = exc.__cause__
    for kind, reason in _UNDECODABLE.items():
        if isinstance(cause, kind):
            return reason
    return None


def is_body_decoding_error(exc: Exception) -> bool:
    """A body that is not JSON at all (400), as opposed to JSON that is not valid (422)."""
    return _undecodable_reason(exc) is not None or bool(_json_errors(exc))


def _undecodable(request: Request, detail: str) -> Response:
    return _respond(request, 400, "invalid_json", f"body: not valid JSON ({detail})", param="body")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if json_errors := _json_errors(exc):
        error = json_errors[0]
        reason = error.get("ctx", {}).get("error", "JSON decode error")
        position = error.get("loc", ("body", 0))[-1]
        return _undecodable(request, f"{reason} at character {position}")
    message = describe_validation_errors(exc.errors())
    if request.url.path.startswith(OPENAI_PREFIX):
        # OpenAI answers an invalid request with 400 and names the offending parameter.
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return _respond(request, 400, "invalid_request", message, param=param)
    return error_response(422, "validation_error", message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if reason := _undecodable_reason(exc):
        return _undecodable(request, reason)
    if exc.status_code == 405:
        return _method_not_allowed(request, exc)
    error_type = _HTTP_TYPES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else error_type.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = "no such route"
    return _respond(request, exc.status_code, error_type, message, exc.headers)


# The methods a route of this API may serve (and Starlette's QUERY).
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY")


def _allowed_methods(request: Request) -> set[str]:
    """Every method some route of the application serves at this request's path."""
    # A route matches in full only for a method it serves; an included router answers for
    # the routes it holds, prefixes and path converters applied. Each try gets a fresh
    # scope: what routing left in this request's scope plays no part.
    scope = request.scope
    allowed = set()
    for method in _METHODS:
        probe = {
            "type": "http",
            "method": method,
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": scope["headers"],
        }
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.routes):
            allowed.add(method)
    return allowed


def _method_not_allowed(request: Request, exc: StarletteHTTPException) -> Response:
    # Starlette's Allow names the methods of the one route it tried; a path served by
    # several routes (GET and POST) allows the methods of them all.
    methods = _allowed_methods(request)
    allow = ", ".join(sorted(methods)) if methods else (exc.headers or {}).get("Allow", "")
    message = f"{request.method} is not allowed here; use {allow}"
    return _respond(request, 405, "method_not_allowed", message, {"Allow": allow})


def install_error_handlers(app: FastAPI) -> None:
    """Render ours, validation and routing errors in the one JSON shape.

    Unexpected exceptions are turned into a JSON 500 by ObservabilityMiddleware.
    """
    app.add_exception_handler(ChatlensError, _chatlens_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
