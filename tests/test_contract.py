"""The request contract: what every route refuses, with which status, the same on SQLite and
PostgreSQL, and all of it in the OpenAPI description (docs/errors.md states the rule)."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import APIRouter
from sqlalchemy import func, select

import chatlens.app
from chatlens.auth.deps import AuthenticatedRoute
from chatlens.fields import FIRST_DAY, LAST_DAY, TEXT_MARKER
from chatlens.models import Conversation, Feedback, Message, User

pytestmark = pytest.mark.asyncio

METHODS = ("get", "put", "post", "delete", "patch")
# Strings that are not free text: their format or their values say what they hold.
NOT_TEXT = ("uuid", "date", "date-time")


async def _spec(client: httpx.AsyncClient) -> dict[str, Any]:
    spec: dict[str, Any] = (await client.get("/openapi.json")).json()
    return spec


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def _strings(spec: dict[str, Any], schema: Any, where: str, seen: set[str]) -> Iterator[Any]:
    """Every string schema reachable from `schema`, with where it was found."""
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            yield from _strings(spec, item, f"{where}[{index}]", seen)
        return
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            schema = spec["components"]["schemas"][name]
            yield from _strings(spec, schema, f"{where} {name}", seen | {name})
        return
    if schema.get("type") == "string":
        yield where, schema
    for key in ("properties", "$defs"):
        for name, sub in schema.get(key, {}).items():
            yield from _strings(spec, sub, f"{where}.{name}", seen)
    for key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "contains"):
        if key in schema:
            yield from _strings(spec, schema[key], f"{where}.{key}", seen)


def _request_strings(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for method, path, operation in _operations(spec):
        name = f"{method.upper()} {path}"
        for parameter in operation.get("parameters", []):
            where = f"{name} {parameter['in']}.{parameter['name']}"
            yield from _strings(spec, parameter["schema"], where, set())
        for media in operation.get("requestBody", {}).get("content", {}).values():
            yield from _strings(spec, media["schema"], f"{name} body", set())


async def test_every_text_field_of_every_request_is_described_as_refusing_nul(
    client: httpx.AsyncClient,
) -> None:
    spec = await _spec(client)
    text_fields = []
    for where, schema in _request_strings(spec):
        if schema.get("format") in NOT_TEXT or "enum" in schema or "const" in schema:
            continue
        if ".contains." in where:
            continue  # the description of a requirement, not a field of its own
        # One constrained type (chatlens.fields): the marker, and a pattern without NUL.
        assert schema.get(TEXT_MARKER) is True, f"{where} is not chatlens.fields text"
        pattern = schema.get("pattern")
        assert pattern is not None, where
        assert not re.search(pattern, "a\x00b"), f"{where}: pattern {pattern} lets NUL in"
        text_fields.append(where)
    assert any("POST /chat body" in w for w in text_fields)
    assert any("/v1/chat/completions" in w for w in text_fields)
    assert any("query.cursor" in w for w in text_fields)


async def test_every_number_and_day_parameter_is_bounded(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    for method, path, operation in _operations(spec):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            options = schema.get("anyOf", [schema])
            for option in options:
                where = f"{method.upper()} {path} {parameter['name']}"
                if option.get("type") == "integer":
                    assert "minimum" in option and "maximum" in option, where
                if option.get("format") == "date":
                    assert option["pattern"].startswith("^(19[7-9]"), where


@pytest.fixture
async def conversation(client: httpx.AsyncClient, account: Any) -> dict[str, Any]:
    response = await client.post("/chat", json={"message": "hello"}, headers=account.headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


NUL = "before\x00after"


def _nul_requests(chat: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, body, field) for every text field a client can send."""
    conversation = chat["conversation_id"]
    message = chat["message_id"]
    return [
        ("POST", "/chat", {"message": NUL}, "message"),
        ("POST", "/chat", {"message": "hi", "user": NUL}, "user"),
        ("POST", "/api/conversations", {"title": NUL}, "title"),
        ("POST", "/api/conversations", {"user": NUL}, "user"),
        ("PATCH", f"/api/conversations/{conversation}", {"title": NUL}, "title"),
        ("POST", f"/api/conversations/{conversation}/messages", {"message": NUL}, "message"),
        ("POST", f"/api/messages/{message}/feedback", {"rating": "up", "comment": NUL}, "comment"),
        (
            "POST",
            f"/api/conversations/{conversation}/csat",
            {"score": 5, "comment": NUL},
            "comment",
        ),
        ("POST", f"/api/conversations/{conversation}/nps", {"score": 9, "comment": NUL}, "comment"),
        ("POST", f"/api/conversations/{conversation}/escalate", {"note": NUL}, "note"),
        ("POST", "/api/admin/users", {"name": NUL}, "name"),
        ("PUT", f"/api/messages/{message}/intent", {"intent": NUL}, "intent"),
        ("POST", "/api/models/swap", {"model": NUL}, "model"),
    ]


async def _counts(sessionmaker: Any) -> list[int]:
    async with sessionmaker() as session:
        return [
            await session.scalar(select(func.count()).select_from(table))
            for table in (Conversation, Message, Feedback, User)
        ]


async def test_nul_in_any_text_field_is_a_clear_422_and_nothing_is_stored(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    chat = (await client.post("/chat", json={"message": "hello"}, headers=admin.headers)).json()
    before = await _counts(sessionmaker)
    for method, path, body, field in _nul_requests(chat):
        response = await client.request(method, path, json=body, headers=admin.headers)
        assert response.status_code == 422, (path, field, response.text)
        message = response.json()["error"]["message"]
        assert message.startswith(f"{field}:") and "NUL" in message, message
    user = (await client.post("/api/admin/users", json={"name": "n"}, headers=admin.headers)).json()
    key = await client.post(
        f"/api/admin/users/{user['id']}/keys", json={"name": NUL}, headers=admin.headers
    )
    assert key.status_code == 422
    assert await _counts(sessionmaker) == [before[0], before[1], before[2], before[3] + 1]


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": NUL}],
        [{"role": "user", "content": [{"type": "text", "text": NUL}]}],
        [{"role": "system", "content": NUL}, {"role": "user", "content": "hi"}],
    ],
)
async def test_nul_in_v1_content_is_an_openai_400_and_nothing_is_stored(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any, messages: list[Any]
) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "builtin-kb", "messages": messages},
        headers=account.headers,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "NUL" in error["message"]
    assert await _counts(sessionmaker) == [0, 0, 0, 1]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("nps", {"score": False}, "score"),
        ("nps", {"score": 9.5}, "score"),
        ("csat", {"score": "5"}, "score"),
        ("regenerate", {"stream": 0}, "stream"),
        ("messages", {"message": "hi", "stream": "false"}, "stream"),
    ],
)
async def test_a_json_number_or_flag_is_not_coerced(
    client: httpx.AsyncClient,
    account: Any,
    conversation: dict[str, Any],
    sessionmaker: Any,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    before = await _counts(sessionmaker)
    response = await client.post(
        f"/api/conversations/{conversation['conversation_id']}/{path}",
        json=body,
        headers=account.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(field)
    assert await _counts(sessionmaker) == before


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("/api/analytics/report?date=9999-12-31", "date"),
        ("/api/analytics/report?period=month&date=0001-01-01", "date"),
        ("/api/analytics/report?date=0", "date"),
        ("/api/analytics/summary?start=0001-01-01", "start"),
        ("/api/analytics/summary?start=9999-12-30&end=9999-12-31", "start"),
        ("/api/analytics/intents?end=0001-01-02", "end"),
        ("/api/analytics/timeseries?metric=turns&start=9999-12-01&end=9999-12-31", "start"),
        ("/api/analytics/export?dataset=conversations&start=0001-01-01", "start"),
        ("/api/sla?window=0d", "window"),
        ("/api/sla?window=1000000m", "window"),
        ("/api/conversations?limit=101", "limit"),
    ],
)
async def test_out_of_range_days_and_numbers_are_a_clear_422(
    client: httpx.AsyncClient, admin: Any, query: str, parameter: str
) -> None:
    response = await client.get(query, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(f"query.{parameter}:")


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
async def test_a_cursor_at_the_edge_of_time_is_a_422(
    client: httpx.AsyncClient, account: Any, moment: str
) -> None:
    raw = orjson.dumps([moment, str(uuid.uuid4())])
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = await client.get(f"/api/conversations?cursor={cursor}", headers=account.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == "cursor: not a cursor this API returned"


@pytest.mark.parametrize("period", ["day", "week", "month"])
async def test_reports_answer_on_the_first_and_last_days_accepted(
    client: httpx.AsyncClient, admin: Any, period: str
) -> None:
    for day in (FIRST_DAY, LAST_DAY):
        response = await client.get(
            f"/api/analytics/report?period={period}&date={day}", headers=admin.headers
        )
        assert response.status_code == 200, response.text
    last_year = f"start={LAST_DAY.replace(month=1, day=1)}&end={LAST_DAY}"
    for route in ("summary", "intents", "timeseries?metric=turns&interval=week&"):
        separator = "" if route.endswith("&") else "?"
        response = await client.get(
            f"/api/analytics/{route}{separator}{last_year}", headers=admin.headers
        )
        assert response.status_code == 200, (route, response.text)


# -- 401 before anything about the body; 400 for a body that is not JSON -----------------------

UNDECODABLE = {
    "malformed JSON": b'{"message": ',
    "invalid UTF-8": b'{"message": "\xff\xfe"}',
    "nested too deeply": b"[" * 30_000 + b"]" * 30_000,
}
# What the 400 says of each: the decoder's own reason, read from the exception, not from
# FastAPI's wording.
UNDECODABLE_REASON = {
    "malformed JSON": "Expecting value at character 12",
    "invalid UTF-8": "not UTF-8",
    "nested too deeply": "nested too deeply",
}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


@pytest.mark.parametrize("body", list(UNDECODABLE), ids=list(UNDECODABLE))
async def test_every_authenticated_route_answers_401_whatever_the_body(
    client: httpx.AsyncClient, body: str
) -> None:
    spec = await _spec(client)
    secured = [(m, p) for m, p, op in _operations(spec) if op.get("security")]
    assert len(secured) > 25
    for method, path in secured:
        for headers in ({}, {"Authorization": "Bearer cl_" + "x" * 43}):
            response = await client.request(
                method,
                _concrete(path) + "?limit=0&start=0001-01-01",
                content=UNDECODABLE[body],
                headers={**headers, "content-type": "application/json"},
            )
            assert response.status_code == 401, (method, path, response.text)


async def test_every_route_that_checks_the_key_first_asks_for_a_key(
    client: httpx.AsyncClient,
) -> None:
    # AuthenticatedRoute answers 401 to an unreadable body without looking at what the
    # route takes: only a route that needs a key may use it.
    spec = await _spec(client)
    routes = [
        route
        for router in vars(chatlens.app).values()
        if isinstance(router, APIRouter)
        for route in router.routes
        if isinstance(route, AuthenticatedRoute)
    ]
    assert len(routes) > 25
    for route in routes:
        for method in route.methods:
            operation = spec["paths"][route.path][method.lower()]
            assert operation.get("security"), (method, route.path)


@pytest.mark.parametrize("body", list(UNDECODABLE), ids=list(UNDECODABLE))
async def test_a_body_that_is_not_json_is_a_400_json_that_is_invalid_a_422(
    client: httpx.AsyncClient, account: Any, body: str
) -> None:
    headers = {**account.headers, "content-type": "application/json"}
    response = await client.post("/chat", content=UNDECODABLE[body], headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_json"
    assert error["message"] == f"body: not valid JSON ({UNDECODABLE_REASON[body]})"
    assert error["request_id"] == response.headers["x-request-id"]
    v1 = await client.post("/v1/chat/completions", content=UNDECODABLE[body], headers=headers)
    assert v1.status_code == 400
    assert v1.json()["error"]["type"] == "invalid_request_error"
    assert v1.json()["error"]["param"] == "body"
    invalid = await client.post("/chat", json={"message": 5}, headers=account.headers)
    assert invalid.status_code == 422
    assert invalid.json()["error"]["type"] == "validation_error"


async def test_method_not_allowed_lists_every_method_of_the_path(
    client: httpx.AsyncClient,
) -> None:
    response = await client.request("OPTIONS", "/api/conversations")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert "GET, POST" in response.json()["error"]["message"]
    # Routes of several routers, with a path parameter: each method that serves the path.
    conversation = f"/api/conversations/{uuid.uuid4()}"
    response = await client.put(conversation)
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, PATCH"
    response = await client.get(conversation + "/csat")
    assert response.headers["allow"] == "POST"
    response = await client.delete("/v1/chat/completions")
    assert response.headers["allow"] == "POST"


async def test_every_answer_a_route_can_give_is_in_the_description(
    client: httpx.AsyncClient,
) -> None:
    spec = await _spec(client)
    for method, path, operation in _operations(spec):
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        assert "500" in responses, where
        if operation.get("security"):
            assert "401" in responses, where
        if "requestBody" in operation:
            assert {"400", "413"} <= set(responses), where
        error_shape = "OpenAIErrorResponse" if path.startswith("/v1/") else "ErrorResponse"
        for status, response in responses.items():
            if status[0] in "45" and not path.startswith("/health"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{error_shape}"}, (where, status)
        if path.startswith("/v1/"):
            assert "422" not in responses, where  # OpenAI answers invalid input with 400
        for media, content in responses.get("200", {}).get("content", {}).items():
            if media == "text/event-stream":
                assert "itemSchema" in content and "schema" not in content, where
    assert (
        "text/event-stream"
        in (spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"])
    )
