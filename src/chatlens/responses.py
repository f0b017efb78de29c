"""OpenAPI descriptions of the error responses routes share."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status documented with the one error shape."""
    text = {
        400: "Bad request",
        401: "Missing, invalid or revoked API key",
        403: "Not allowed for this user",
        404: "Not found (or not yours)",
        409: "Conflict with the current state",
        413: "Request body too large",
        422: "Invalid input; the message names the field",
        500: "Internal error; quote the request_id",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "Error")} for s in statuses}
