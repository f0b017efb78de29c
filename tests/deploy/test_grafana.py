"""Grafana provisioning: fixed uids, and the links between metrics, logs and traces."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"


def datasources() -> dict[str, Any]:
    text = (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
    return {d["uid"]: d for d in yaml.safe_load(text)["datasources"]}


def test_fixed_uids_one_default() -> None:
    found = datasources()
    assert set(found) == {"prometheus", "loki", "tempo"}
    assert [uid for uid, d in found.items() if d.get("isDefault")] == ["prometheus"]


def test_metrics_logs_and_traces_link_to_each_other() -> None:
    found = datasources()
    [exemplar] = found["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert exemplar == {"name": "trace_id", "datasourceUid": "tempo"}
    [derived] = found["loki"]["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] == "tempo"
    line = '{"event":"message_processed","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}'
    match = re.search(derived["matcherRegex"], line)
    assert match is not None and match.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    logs = found["tempo"]["jsonData"]["tracesToLogsV2"]
    assert logs["datasourceUid"] == "loki"
    assert "trace_id" in logs["query"]


def test_dashboards_provider_reads_the_mounted_folder() -> None:
    text = (GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    [provider] = yaml.safe_load(text)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
