"""Dashboards and rules against a real Prometheus scraping real chatlens processes.

Two `chatlens serve` processes (the builtin bot, and the openai backend in front of a fake
upstream on 127.0.0.1), a real node-exporter and a real Prometheus from Debian's package,
run with the config and rule files from deploy/prometheus — only the targets are pointed
at these processes and the intervals cut to one second. Traffic goes through the real API
in two rounds with scrapes between them, so counters move inside the queried windows.
Then every rule and every dashboard query is sent to Prometheus's HTTP API.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.dashboards import label_values, load, queries
from tests.deploy.test_runbook import runbook_queries
from tests.helpers import Server, env_without_chatlens, free_port, require_tool
from tests.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")
JOB = "chatlens"
# Filled only by queries that compare with the past (`offset 1w`): a fresh Prometheus has none.
NEEDS_HISTORY = re.compile(r"\boffset\b")
TARGETS = 4  # two chatlens processes, node-exporter, Prometheus itself


@dataclass
class Stack:
    prometheus: str
    servers: list[Server]
    trace_ids: set[str] = field(default_factory=set)

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body: dict[str, Any] = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]  # type: ignore[no-any-return]

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.prometheus}/api/v1/{path}", params=params, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["data"]


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer:\n{log.read_text(errors='replace')}")


def _start(argv: list[str], log: Path, ready: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    _wait_http(ready, process, log)
    return process


def _prometheus_config(workdir: Path, chatlens: list[str], node: str, port: int) -> Path:
    """deploy/prometheus as shipped, but scraping these processes every second."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    config.pop("alerting")
    targets = {"chatlens": chatlens, "node": [node], "prometheus": [f"127.0.0.1:{port}"]}
    jobs = [job for job in config["scrape_configs"] if job["job_name"] in targets]
    assert {job["job_name"] for job in jobs} == set(targets)
    for job in jobs:
        job["scrape_interval"] = "1s"
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    config["scrape_configs"] = jobs
    rule_files = []
    for name in config["rule_files"]:
        rules = yaml.safe_load((PROMETHEUS / name).read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        copy = workdir / Path(name).name
        copy.write_text(yaml.safe_dump(rules))
        rule_files.append(str(copy))
    config["rule_files"] = rule_files
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _chat(server: Server, key: str, trace_ids: set[str], **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/chat", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    trace_ids.add(response.headers["x-trace-id"])
    return response.json()  # type: ignore[no-any-return]


def _traffic(stack: Stack, keys: list[str]) -> None:
    """One round of what a support bot sees: chats, feedback, escalations, errors."""
    builtin, upstream = stack.servers
    key, upstream_key = keys
    auth = {"Authorization": f"Bearer {key}"}
    api = f"{builtin.url}/api"
    order = _chat(builtin, key, stack.trace_ids, message="where is my order", platform="telegram")
    refund = _chat(builtin, key, stack.trace_ids, message="I want a refund", project_id="shop")
    human = _chat(builtin, key, stack.trace_ids, message="let me talk to a human")
    with httpx.stream(
        "POST", f"{builtin.url}/chat", json={"message": "cancel my order", "stream": True},
        headers=auth, timeout=10,
    ) as stream:  # fmt: skip
        assert stream.status_code == 200
        stream.read()
    for turn, rating in ((order, "up"), (refund, "down")):
        done = httpx.post(
            f"{api}/messages/{turn['message_id']}/feedback", json={"rating": rating}, headers=auth
        )
        assert done.status_code in (200, 201), done.text
    for turn, csat, nps, comment in ((order, 5, 10, None), (refund, 2, 3, "I will call my lawyer")):
        base = f"{api}/conversations/{turn['conversation_id']}"
        for kind, score in (("csat", csat), ("nps", nps)):
            done = httpx.post(
                f"{base}/{kind}", json={"score": score, "comment": comment}, headers=auth
            )
            assert done.status_code in (200, 201), done.text
        outcome = "converted" if csat > 3 else "resolved"
        assert httpx.post(f"{base}/resolve", json={"outcome": outcome}, headers=auth).is_success
    for turn, intent in ((order, "order_status"), (human, "refund")):  # one right, one wrong
        labeled = httpx.put(
            f"{api}/messages/{turn['message_id']}/intent", json={"intent": intent}, headers=auth
        )
        assert labeled.status_code == 200, labeled.text
    assert httpx.get(f"{builtin.url}/no/such/page").status_code == 404
    assert httpx.post(f"{builtin.url}/chat", json={}, headers=auth).status_code == 422

    # The openai backend, through chatlens's own v1 API (OpenAI-compatible).
    v1 = f"{upstream.url}/v1/chat/completions"
    up_auth = {"Authorization": f"Bearer {upstream_key}"}
    for model, stream_it, status in (("gpt-4o-mini", False, 200), ("gpt-4o-mini", True, 200),
                                     ("fail", False, 502)):  # fmt: skip
        done = httpx.post(
            v1,
            json={
                "model": model,
                "stream": stream_it,
                "messages": [{"role": "user", "content": "where is my order?"}],
                "metadata": {"project_id": "shop", "platform": "whatsapp"},
            },
            headers=up_auth,
            timeout=15,
        )
        assert done.status_code == status, done.text
        stack.trace_ids.add(done.headers["x-trace-id"])


def _scraped_after(stack: Stack, moment: float) -> bool:
    targets = stack.api("targets")["activeTargets"]
    return len(targets) == TARGETS and all(
        t["health"] == "up" and _epoch(t["lastScrape"]) > moment for t in targets
    )


def _wait_for_scrape_after(stack: Stack, moment: float, what: str) -> None:
    _wait(lambda: _scraped_after(stack, moment), what)


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(re.sub(r"\.(\d{6})\d*", r".\1", timestamp)).timestamp()


def _wait(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _recording_rules() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "rules" / "recording.yml").read_text())["groups"]
    return [rule["record"] for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_tool("prometheus", "Debian package prometheus")
    node_exporter = require_tool("prometheus-node-exporter", "Debian package of that name")
    workdir = tmp_path_factory.mktemp("e2e")
    env = env_without_chatlens() | {
        "CHATLENS_BUILTIN_STREAM_DELAY_MS": "1",
        "CHATLENS_ACTIVE_SESSIONS_REFRESH_SECONDS": "1",
    }
    processes: list[subprocess.Popen[bytes]] = []
    servers: list[Server] = []
    with FakeUpstream() as upstream:
        try:
            node_port = free_port()
            processes.append(
                _start(
                    [node_exporter, f"--web.listen-address=127.0.0.1:{node_port}"],
                    workdir / "node-exporter.log",
                    f"http://127.0.0.1:{node_port}/metrics",
                )
            )
            for name, extra in (
                ("builtin", {}),
                (
                    "openai",
                    {
                        "CHATLENS_INFERENCE_BACKEND": "openai",
                        "CHATLENS_OPENAI_BASE_URL": upstream.url,
                        "CHATLENS_OPENAI_API_KEY": "sk-upstream-secret",
                        "CHATLENS_MODEL": "gpt-4o-mini",
                        "CHATLENS_UPSTREAM_MAX_RETRIES": "0",
                    },
                ),
            ):
                folder = workdir / name
                folder.mkdir()
                servers.append(Server(folder, env | extra))
            keys = [KEY.findall(server.output)[0] for server in servers]
            port = free_port()
            config = _prometheus_config(
                workdir,
                [server.url.removeprefix("http://") for server in servers],
                f"127.0.0.1:{node_port}",
                port,
            )
            processes.append(
                _start(
                    [
                        prometheus,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={workdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--enable-feature=exemplar-storage",
                    ],
                    workdir / "prometheus.log",
                    f"http://127.0.0.1:{port}/-/ready",
                )
            )
            stack = Stack(prometheus=f"http://127.0.0.1:{port}", servers=servers)
            # Round one creates every series; round two, after two scrapes, moves them.
            for _ in range(2):
                _wait_for_scrape_after(stack, time.time(), "a first scrape")
                _traffic(stack, keys)
                _wait_for_scrape_after(stack, time.time() + 1, "two scrapes after the traffic")
            _wait(
                lambda: all(stack.query(name)["result"] for name in _recording_rules()),
                "every recording rule to have data",
            )
            yield stack
        finally:
            for server in servers:
                server.stop()
            for process in processes:
                process.terminate()
                process.wait(timeout=15)


def _has_a_number(data: dict[str, Any]) -> bool:
    if data["resultType"] == "scalar":
        return data["result"][1] not in ("NaN", "+Inf", "-Inf")
    return any(sample["value"][1] not in ("NaN", "+Inf", "-Inf") for sample in data["result"])


def test_every_target_is_scraped(stack: Stack) -> None:
    targets = stack.api("targets")["activeTargets"]
    assert sorted(t["labels"]["job"] for t in targets) == ["chatlens", "chatlens", "node",
                                                           "prometheus"]  # fmt: skip
    assert all(t["health"] == "up" for t in targets), targets


def test_every_rule_evaluates_and_every_recording_rule_has_data(stack: Stack) -> None:
    groups = stack.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(_recording_rules()) + len(
        [r for g in yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())["groups"]
         for r in g["rules"]]
    )  # fmt: skip
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
        stack.query(rule["query"])  # the expression itself parses and evaluates
    for name in _recording_rules():
        assert _has_a_number(stack.query(name)), name


@pytest.mark.parametrize(
    "uid", ["chatlens-operational", "chatlens-ai", "chatlens-business", "chatlens-node"]
)
def test_every_dashboard_query_returns_numbers(stack: Stack, uid: str) -> None:
    board = load()[uid]
    checked = 0
    for query in queries(board):
        if query.datasource == "${loki}":
            continue  # LogQL: no Loki on this machine; the panel is checked statically
        data = stack.query(query.for_prometheus(JOB))
        if NEEDS_HISTORY.search(query.expr) or query.where.startswith("annotation:"):
            continue  # an annotation marks events (alerts, restarts): none is a fine answer
        assert data["result"], f"{query.name}: no data for {query.for_prometheus(JOB)}"
        assert _has_a_number(data), f"{query.name}: only NaN for {query.for_prometheus(JOB)}"
        checked += 1
    assert checked >= 10


def test_every_dashboard_variable_finds_values(stack: Stack) -> None:
    for board in load().values():
        for variable, metric, label in label_values(board):
            values = stack.api(f"label/{label}/values", **{"match[]": metric})
            assert values, f"{board['uid']}: ${variable} finds no {label} of {metric}"


def test_latency_exemplars_lead_to_the_traces_of_real_answers(stack: Stack) -> None:
    now = time.time()
    found = stack.api(
        "query_exemplars",
        query='http_request_duration_seconds_bucket{job="chatlens"}',
        start=now - 600,
        end=now,
    )
    trace_ids = {e["labels"]["trace_id"] for series in found for e in series["exemplars"]}
    assert trace_ids & stack.trace_ids, (trace_ids, stack.trace_ids)


def test_a_critical_comment_fires_negative_feedback_and_the_annotation_shows_it(
    stack: Stack,
) -> None:
    firing = {
        (a["labels"]["alertname"], a["labels"].get("kind"))
        for a in stack.api("alerts")["alerts"]
        if a["state"] == "firing"
    }
    assert ("NegativeFeedback", "csat") in firing
    [annotation] = [
        q for q in queries(load()["chatlens-operational"]) if q.where == "annotation: Firing alerts"
    ]
    shown = stack.query(annotation.for_prometheus(JOB))["result"]
    assert "NegativeFeedback" in {s["metric"]["alertname"] for s in shown}


def test_every_query_in_the_runbook_evaluates(stack: Stack) -> None:
    for expr in runbook_queries():
        stack.query(expr)
