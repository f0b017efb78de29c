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


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(BaseModel):
    """The error shape of the OpenAI-compatible API (/v1), which its SDKs parse."""

    error: OpenAIErrorDetail


_METHODS = ("get", "put", "post", "delete", "patch", "options", "head")


def _error_ref(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _not_null(parameter: dict[str, Any]) -> None:
    """A parameter's value is text, never JSON null: an optional one is simply left out."""
    schema = parameter.get("schema", {})
    options = schema.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        del schema["anyOf"]
        if len(rest) == 1:
            schema.update(rest[0])
        else:
            schema["anyOf"] = rest


def complete_error_responses(spec: dict[str, Any], *, openai_prefix: str) -> dict[str, Any]:
    """Every error an operation can answer, in the description (docs/errors.md has the rule).

    Derived from what the operation takes, so a new route is described without a word:
    a body can be undecodable (400) or too large (413); a key can be missing (401); input
    can be invalid (422, or 400 under /v1 as OpenAI answers); anything can fail (500); a
    request head can be too large for the server (431); what needs the database can find it
    unreachable, and a stopping service refuses new work (503, with Retry-After).
    """
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorDetail, ErrorResponse, OpenAIErrorDetail, OpenAIErrorResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
        schemas.setdefault(model.__name__, schema)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for path, item in spec.get("paths", {}).items():
        openai = path.startswith(openai_prefix)
        content = _error_ref("OpenAIErrorResponse" if openai else "ErrorResponse")
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            for parameter in operation.get("parameters", []):
                _not_null(parameter)
            responses = operation.setdefault("responses", {})
            statuses: dict[int, str] = {
                431: "Request head too large (CHATLENS_MAX_HEADER_BYTES, CHATLENS_MAX_HEADERS)",
                500: "Internal error; quote the request_id",
            }
            if operation.get("security"):
                statuses[401] = "Missing, invalid or revoked API key"
                statuses[503] = (
                    "The database is unreachable, or the service is stopping; retry after "
                    "Retry-After"
                )
            takes_input = bool(operation.get("parameters")) or "requestBody" in operation
            if "requestBody" in operation:
                statuses[400] = "The body is not JSON (or not UTF-8, or nested too deeply)"
                statuses[413] = "Request body too large"
            if takes_input:
                if openai:
                    responses.pop("422", None)
                    statuses[400] = "Invalid request: the body is not JSON or a field is invalid"
                else:
                    statuses[422] = "Invalid input; the message names the field"
            if openai:  # whatever else a route declared, its errors come in OpenAI's shape
                for status, documented in responses.items():
                    if status[0] in "45":
                        documented["content"] = content
            for status, description in statuses.items():
                documented = responses.setdefault(str(status), {"description": description})
                if str(status) == "422" or (status == 400 and openai):
                    documented["description"] = description
                documented["content"] = content
    return spec
