"""The ClickHouse schema, the Vector pipeline and docs/clickhouse.md, on a real ClickHouse.

A real `chatlens serve` answers a chat, a request to an unknown path (404), a bad request
(422) and a CSAT. Its stdout lines go into `chatlens.logs` as Vector's clickhouse sink sends
them, and the output of `chatlens export` goes into `chatlens.conversation_metrics` with the
INSERT of docs/clickhouse.md. ClickHouse is chdb, in process. Then every SQL block of the doc
runs, and the results are checked against the lines and the export.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from chatlens.analytics import export
from tests.helpers import Server, require

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "deploy" / "clickhouse" / "schema.sql"
VECTOR = ROOT / "deploy" / "vector" / "vector.yaml"
DOC = ROOT / "docs" / "clickhouse.md"
KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.DOTALL)
LOAD_EXPORT = re.compile(r'-q "(INSERT INTO chatlens\.conversation_metrics [^"]*)"')
CSAT_SCORE = 4
# The fields of docs/logging-standard.md that every line, a request's lines, the access line
# or `message_processed` carry. Each has a typed column in chatlens.logs.
LOG_FIELDS = (
    "timestamp",
    "level",
    "event",
    "logger",
    "service",
    "version",
    "environment",
    "request_id",
    "trace_id",
    "span_id",
    "method",
    "route",
    "path",
    "status",
    "duration_ms",
    "client_ip",
    "user_agent",
    "user_id",
    "project_id",
    "conversation_id",
    "platform",
    "intent",
    "confidence",
    "response_time_ms",
    "ttft_ms",
    "ai_tokens_used",
    "cost_usd",
    "ai_model",
    "escalated",
)


@dataclass(frozen=True)
class Run:
    lines: list[str]  # the server's stdout
    records: list[dict[str, Any]]  # the same lines, parsed
    export: list[str]  # the JSON lines of `chatlens export`
    trace_id: str  # of the chat request


class ClickHouse:
    def __init__(self, session: Any) -> None:
        self.session = session

    def query(self, sql: str, **params: str) -> list[dict[str, Any]]:
        result = self.session.query(sql, "JSONEachRow", params=params or None)
        return [orjson.loads(line) for line in result.data().splitlines() if line.strip()]

    def insert(self, statement: str, rows: list[str]) -> None:
        self.session.query(statement + "\n" + "\n".join(rows), "JSONEachRow")

    def columns(self, table: str, kind: str | None = None) -> set[str]:
        sql = "SELECT name FROM system.columns WHERE database = 'chatlens' AND table = {t:String}"
        if kind is not None:
            sql += " AND default_kind = {kind:String}"
            return {r["name"] for r in self.query(sql, t=table, kind=kind)}
        return {r["name"] for r in self.query(sql, t=table)}


def documented_queries() -> dict[str, str]:
    """The ```sql blocks of docs/clickhouse.md, by the name in their first line's comment."""
    queries = {}
    for block in SQL_BLOCK.findall(DOC.read_text()):
        first = block.splitlines()[0]
        assert first.startswith("-- "), f"a query without a name: {block}"
        queries[first.removeprefix("-- ").strip()] = block
    return queries


def vector_event(line: str) -> str:
    """What the `chatlens_json` remap of vector.yaml makes of a JSON line: its fields plus
    `raw`. The clickhouse sink writes the parsed timestamp back in RFC 3339, as in the line."""
    return orjson.dumps({**orjson.loads(line), "raw": line}).decode()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    workdir = tmp_path_factory.mktemp("serve")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHATLENS_") and k not in ("DATABASE_URL", "LOG_LEVEL")
    }
    server = Server(workdir, env)
    try:
        key = KEY.search(server.output)
        assert key is not None, server.output
        headers = {"Authorization": f"Bearer {key.group()}"}
        chat = httpx.post(
            f"{server.url}/chat", json={"message": "where is my order"}, headers=headers, timeout=10
        )
        assert chat.status_code == 200, chat.text
        assert httpx.get(f"{server.url}/nope", timeout=10).status_code == 404
        bad = httpx.post(f"{server.url}/chat", json={}, headers=headers, timeout=10)
        assert bad.status_code == 422
        conversation_id = chat.json()["conversation_id"]
        csat = httpx.post(
            f"{server.url}/api/conversations/{conversation_id}/csat",
            json={"score": CSAT_SCORE},
            headers=headers,
            timeout=10,
        )
        assert csat.status_code == 201, csat.text
    finally:
        server.stop()

    # --end is exclusive: tomorrow, so that today's turns are in.
    today = dt.datetime.now(dt.UTC).date()
    output = workdir / "metrics.jsonl"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "chatlens.cli", "export"),
            *("--dataset", "conversation_metrics", "--format", "json"),
            *("--start", str(today - dt.timedelta(days=1))),
            *("--end", str(today + dt.timedelta(days=1)), "-o", str(output)),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = server.lines()
    return Run(
        lines=lines,
        records=[orjson.loads(line) for line in lines],
        export=output.read_text().splitlines(),
        trace_id=chat.headers["x-trace-id"],
    )


@pytest.fixture(scope="module")
def clickhouse(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouse]:
    try:
        from chdb import session as chdb_session
    except ImportError:
        require(False, "chdb (PyPI)")
    session = chdb_session.Session(str(tmp_path_factory.mktemp("clickhouse")))
    ch = ClickHouse(session)
    try:
        # chdb reads dates in the best_effort format and skips unknown JSON fields by default.
        # A ClickHouse server reads dates only in the basic format. Use the strict settings,
        # so that each insert must state what it needs.
        ch.query("SET date_time_input_format = 'basic'")
        ch.query("SET input_format_skip_unknown_fields = 0")
        ch.query("SET output_format_json_quote_64bit_integers = 0")
        ch.query(SCHEMA.read_text())
        # As Vector's clickhouse sink sends them (skip_unknown_fields, date_time_best_effort).
        ch.insert(
            "INSERT INTO chatlens.logs SETTINGS input_format_skip_unknown_fields = 1, "
            "date_time_input_format = 'best_effort' FORMAT JSONEachRow",
            [vector_event(line) for line in run.lines],
        )
        # With the doc's command, twice, as two overlapping exports would load it.
        [load] = LOAD_EXPORT.findall(DOC.read_text())
        ch.insert(load, run.export)
        ch.insert(load, run.export)
        yield ch
    finally:
        session.close()


def test_every_exported_field_has_a_column(run: Run, clickhouse: ClickHouse) -> None:
    columns = clickhouse.columns("conversation_metrics")
    assert set(export.columns("conversation_metrics")) <= columns
    assert len(run.export) == 1  # one chat turn
    for line in run.export:
        assert set(orjson.loads(line)) <= columns, line

    [exported] = [orjson.loads(line) for line in run.export]
    [stored] = clickhouse.query(
        "SELECT * FROM chatlens.conversation_metrics FINAL WHERE id = {id:UUID}",
        id=exported["id"],
    )
    assert stored["timestamp"] == exported["timestamp"].replace("T", " ").removesuffix("+00:00")
    assert Decimal(str(stored["cost_usd"])) == Decimal(exported["cost_usd"])
    for name, value in exported.items():
        if name not in ("timestamp", "cost_usd"):
            assert stored[name] == value, name
    [count] = clickhouse.query("SELECT count() AS n FROM chatlens.conversation_metrics")
    assert count["n"] == 2 * len(run.export)  # loaded twice; FINAL keeps one of each


def test_every_log_field_has_a_column_with_the_line_value(run: Run, clickhouse: ClickHouse) -> None:
    assert set(LOG_FIELDS) <= clickhouse.columns("logs")
    rows = clickhouse.query(
        "SELECT * FROM chatlens.logs ORDER BY timestamp "
        "SETTINGS asterisk_include_materialized_columns = 1"
    )
    assert sorted(row["raw"] for row in rows) == sorted(run.lines)
    for row in rows:
        line = orjson.loads(row["raw"])
        assert row["timestamp"] == line["timestamp"].replace("T", " ").removesuffix("Z")
        for field in LOG_FIELDS[1:]:
            value = line.get(field)
            if field == "status" and not isinstance(value, int):
                # `message_processed` has the answer's outcome there.
                assert row["status"] is None
                assert row["answer_status"] == (value or ""), line
            elif value is None:
                assert row[field] in (None, ""), (field, line)
            else:
                assert row[field] == value, (field, line)
    processed = [row for row in rows if row["event"] == "message_processed"]
    assert [row["answer_status"] for row in processed] == ["complete"]


def test_only_timestamp_and_the_line_come_from_vector(clickhouse: ClickHouse) -> None:
    """Every other column is read from `raw`, so the remap's only duty is these two."""
    assert clickhouse.columns("logs", kind="") == {"timestamp", "raw"}
    source = yaml.safe_load(VECTOR.read_text())["transforms"]["chatlens_json"]["source"]
    assert re.search(r"^\.raw = raw$", source, re.MULTILINE)
    assert re.search(r"^\.timestamp = parse_timestamp\(", source, re.MULTILINE)


def test_the_doc_names_its_queries() -> None:
    assert set(documented_queries()) == {
        "errors by route",
        "trace lookup",
        "csat by day",
        "cost by project",
    }


def test_errors_by_route(run: Run, clickhouse: ClickHouse) -> None:
    [unmatched] = [r for r in run.records if r.get("route") == "__unmatched__"]
    day = unmatched["timestamp"][:10]
    on_day = [r for r in run.records if r["timestamp"].startswith(day)]
    expected: dict[str, Counter[str]] = {}
    for r in on_day:
        kinds = expected.setdefault(r.get("route", ""), Counter())
        if r["event"] == "http_request" and r["status"] >= 500:
            kinds["server_errors"] += 1
        elif r["event"] == "http_request" and r["status"] >= 400:
            kinds["client_errors"] += 1
        if r["level"] in ("ERROR", "CRITICAL"):
            kinds["error_lines"] += 1
    want = {route: kinds for route, kinds in expected.items() if kinds}
    assert set(want) == {"__unmatched__", "/chat"}  # the 404 and the 422

    rows = clickhouse.query(documented_queries()["errors by route"], day=day)
    got = {
        row["route"]: Counter({k: v for k, v in row.items() if k != "route" and v}) for row in rows
    }
    assert got == want
    assert len(rows) == len(got)


def test_trace_lookup(run: Run, clickhouse: ClickHouse) -> None:
    rows = clickhouse.query(documented_queries()["trace lookup"], trace_id=run.trace_id)
    pairs = zip(run.lines, run.records, strict=True)
    expected = [line for line, r in pairs if r.get("trace_id") == run.trace_id]
    assert sorted(row["raw"] for row in rows) == sorted(expected)
    events = [row["event"] for row in rows]
    assert {"message_processed", "http_request"} <= set(events)
    assert [row["timestamp"] for row in rows] == sorted(row["timestamp"] for row in rows)
    assert all(orjson.loads(row["raw"])["trace_id"] == run.trace_id for row in rows)
    [access] = [row for row in rows if row["event"] == "http_request"]
    assert (access["route"], access["status"]) == ("/chat", 200)
    assert clickhouse.query(documented_queries()["trace lookup"], trace_id="0" * 32) == []


def test_csat_by_day(run: Run, clickhouse: ClickHouse) -> None:
    [given] = [r for r in run.records if r["event"] == "feedback_received"]
    assert given["kind"] == "csat"
    rows = clickhouse.query(documented_queries()["csat by day"])
    assert rows == [
        {"day": given["timestamp"][:10], "csat_mean": CSAT_SCORE, "csat": 1, "responses": 1}
    ]


def test_cost_by_project(run: Run, clickhouse: ClickHouse) -> None:
    exported = [orjson.loads(line) for line in run.export]
    rows = clickhouse.query(documented_queries()["cost by project"])
    assert len(rows) == 1
    [row] = rows
    assert (row["day"], row["project_id"]) == (exported[0]["timestamp"][:10], "default")
    assert row["turns"] == len(exported)  # the export was loaded twice
    assert row["tokens"] == sum(e["tokens_used"] for e in exported) > 0
    assert Decimal(str(row["cost_usd"])) == sum(Decimal(e["cost_usd"]) for e in exported)


def test_vector_pipeline(clickhouse: ClickHouse) -> None:
    config = yaml.safe_load(VECTOR.read_text())
    sources, transforms, sinks = config["sources"], config["transforms"], config["sinks"]
    defined = set(sources) | set(transforms)
    for name, component in {**transforms, **sinks}.items():
        assert component["inputs"], name
        assert set(component["inputs"]) <= defined, name

    [source] = sources.values()
    assert source["type"] == "docker_logs"
    assert source["include_labels"] == ["com.docker.compose.project=chatlens"]
    [remap] = transforms.values()
    assert remap["type"] == "remap"
    assert 'if .stream != "stdout"' in remap["source"]  # not the banner with the admin key

    by_type = {sink["type"]: sink for sink in sinks.values()}
    assert set(by_type) == {"loki", "clickhouse"}
    loki = by_type["loki"]
    assert loki["endpoint"] == "http://loki:3100"
    assert loki["labels"] == {"service": "{{ service }}", "level": "{{ level }}"}
    assert loki["encoding"]["codec"] == "json"

    sink = by_type["clickhouse"]
    assert sink["endpoint"] == "http://clickhouse:8123"
    assert sink["skip_unknown_fields"] is True
    assert sink["date_time_best_effort"] is True
    assert sink["batch"]["max_events"] >= 1000
    tables = clickhouse.query(
        "SELECT name FROM system.tables WHERE database = {db:String}", db=sink["database"]
    )
    assert sink["table"] in {t["name"] for t in tables}
    assert f"CREATE TABLE IF NOT EXISTS {sink['database']}.{sink['table']}" in SCHEMA.read_text()
