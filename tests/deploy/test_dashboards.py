"""The Grafana dashboards: importable as they are, and a panel for every number they promise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatlens.observability.metrics import Metrics
from tests.deploy.dashboards import load, panels, queries

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
UIDS = {"chatlens-operational", "chatlens-ai", "chatlens-business", "chatlens-node"}

# (dashboard, panel title, a metric its query reads): seed 002's dashboard items and the
# panels the dashboards issue lists.
PROMISED = [
    # Operational: RPS and API statuses, real-time errors, resources, active sessions.
    ("chatlens-operational", "Requests/s", "http_requests_total"),
    ("chatlens-operational", "Requests/s by status", "http_requests_total"),
    ("chatlens-operational", "Errors/s by service and type", "errors_total"),
    ("chatlens-operational", "Error ratios", "job:errors:ratio_rate5m"),
    ("chatlens-operational", "Chat turns/s by outcome", "chat_turns_total"),
    ("chatlens-operational", "Latency p50 / p95 / p99 by route", "http_request_duration_seconds"),
    ("chatlens-operational", "Requests in progress", "http_requests_in_progress"),
    ("chatlens-operational", "Event streams open", "sse_streams_active"),
    ("chatlens-operational", "Active sessions", "active_sessions"),
    ("chatlens-operational", "CPU by instance", "process_cpu_seconds_total"),
    ("chatlens-operational", "Memory by instance", "process_resident_memory_bytes"),
    ("chatlens-operational", "Warnings and errors", '{service="chatlens"}'),  # Loki
    # AI performance: response time, tokens and cost, intent accuracy, answer quality.
    ("chatlens-ai", "AI response time", "response_time_seconds"),
    ("chatlens-ai", "Time to first token p95 by model", "ai_time_to_first_token_seconds"),
    ("chatlens-ai", "Tokens/s by model", "ai_tokens_total"),
    ("chatlens-ai", "Cost per hour by model and project", "ai_cost_usd_total"),
    ("chatlens-ai", "Intent confidence", "intent_confidence"),
    ("chatlens-ai", "Intent accuracy", "intent_labels_total"),
    ("chatlens-ai", "Answers rated helpful", "feedback_total"),
    ("chatlens-ai", "Escalations per hour by reason", "escalations_total"),
    ("chatlens-ai", "Inference backend up", "inference_up"),
    # Business: conversations by platform, top intents, satisfaction, conversion.
    ("chatlens-business", "Conversations by platform", "conversations_total"),
    ("chatlens-business", "Top intents", "messages_total"),
    ("chatlens-business", "CSAT", "satisfaction_score"),
    ("chatlens-business", "NPS", "feedback_total"),
    ("chatlens-business", "Escalations per hour by platform", "escalations_total"),
    ("chatlens-business", "Outcomes", "conversations_resolved_total"),
    ("chatlens-business", "Conversion rate", "conversations_resolved_total"),
    ("chatlens-business", "Resolution time", "conversation_resolution_seconds"),
    # Node health: CPU, memory, disk, network.
    ("chatlens-node", "CPU by mode", "node_cpu_seconds_total"),
    ("chatlens-node", "Memory", "node_memory_MemAvailable_bytes"),
    ("chatlens-node", "Disk used % by mountpoint", "node_filesystem_avail_bytes"),
    ("chatlens-node", "Network traffic", "node_network_receive_bytes_total"),
]


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return load()


def test_four_dashboards_with_fixed_uids_ready_to_provision(
    boards: dict[str, dict[str, Any]],
) -> None:
    assert set(boards) == UIDS
    for uid, board in boards.items():
        assert board["schemaVersion"] >= 39, uid
        assert "__inputs" not in board and "__requires" not in board, uid
        assert board.get("id") is None, uid  # Grafana assigns it; a fixed one clashes
        assert "chatlens" in board["tags"], uid
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", uid
        assert variables["datasource"]["query"] == "prometheus", uid


def test_every_query_uses_the_datasource_variables(boards: dict[str, dict[str, Any]]) -> None:
    for board in boards.values():
        for panel in panels(board):
            expected = "${loki}" if panel["type"] == "logs" else "${datasource}"
            assert panel["datasource"]["uid"] == expected, panel["title"]
        for query in queries(board):
            assert query.datasource in ("${datasource}", "${loki}"), query.name
            assert query.expr.strip(), query.name


def _outside_quotes(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def test_every_range_is_grafanas_rate_interval_or_range(
    boards: dict[str, dict[str, Any]],
) -> None:
    """A fixed [5m] breaks on a scrape interval other than the one it was written for."""
    for board in boards.values():
        for query in queries(board):
            if query.datasource != "${datasource}":
                continue
            ranges = re.findall(r"\[([^\]]*)\]", _outside_quotes(query.expr))
            assert set(ranges) <= {"$__rate_interval", "$__range"}, (query.name, ranges)


def _known_names() -> set[str]:
    names = {"up", "ALERTS"}
    for family in Metrics().registry.collect():
        base = family.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    for path in RULES.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {rule["record"] for rule in group["rules"] if "record" in rule}
    return names


PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "topk", "by", "without", "rate", "increase",
    "histogram_quantile", "sort_desc", "changes", "time", "offset", "and", "or", "unless",
    "scalar", "vector",
}  # fmt: skip


def test_every_metric_a_dashboard_reads_exists(boards: dict[str, dict[str, Any]]) -> None:
    """chatlens's own names against the catalogue and the recording rules (node_* are checked
    against a real node-exporter in test_end_to_end)."""
    known = _known_names()
    for board in boards.values():
        for query in queries(board):
            if query.datasource != "${datasource}":
                continue
            text = _outside_quotes(query.expr)
            text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
            text = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", text)  # grouping labels
            words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
            words -= PROMQL_WORDS | {"$__rate_interval", "__rate_interval", "__range", "w"}
            metrics = {w for w in words if not w.startswith("node_")}
            assert metrics <= known, (query.name, sorted(metrics - known))


def test_panels_fit_the_grid_without_overlapping(boards: dict[str, dict[str, Any]]) -> None:
    for uid, board in boards.items():
        taken: set[tuple[int, int]] = set()
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), uid
        titles = [p["title"] for p in panels(board)]
        assert len(titles) == len(set(titles)), uid
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (uid, panel["title"])
            cells = {
                (pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])
            }
            assert not cells & taken, (uid, panel["title"])
            taken |= cells


def test_every_promised_number_has_its_panel(boards: dict[str, dict[str, Any]]) -> None:
    for uid, title, metric in PROMISED:
        found = [p for p in panels(boards[uid]) if p["title"] == title]
        assert len(found) == 1, f"{uid}: no panel {title!r}"
        exprs = " ".join(t["expr"] for t in found[0]["targets"])
        assert metric in exprs, f"{uid} / {title}: does not read {metric}"


def test_latency_panels_show_exemplars(boards: dict[str, dict[str, Any]]) -> None:
    with_exemplars = {
        (uid, p["title"])
        for uid, board in boards.items()
        for p in panels(board)
        if any(t.get("exemplar") for t in p.get("targets", []))
    }
    assert {
        ("chatlens-operational", "Latency p50 / p95 / p99 by route"),
        ("chatlens-ai", "AI response time"),
        ("chatlens-ai", "Time to first token p95 by model"),
    } <= with_exemplars
