"""The Prometheus config, recording rules and alerts, checked by the real promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.helpers import require_tool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RUNBOOK = ROOT / "docs" / "runbook.md"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool", "Debian package prometheus")
    return subprocess.run(
        [tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_config_and_rules_are_valid() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 rule files found" in done.stdout


def test_every_alert_rule_unit_test_passes() -> None:
    tests = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "tests").glob("*.yml"))
    done = promtool("test", "rules", *tests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(tests)


def _anchors() -> set[str]:
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_is_labelled_annotated_and_has_a_runbook_section() -> None:
    anchors = _anchors()
    for rule in alerts():
        labels = rule.get("labels") or {}
        annotations = rule.get("annotations") or {}
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels.get("severity") in ("critical", "warning", "info"), rule["alert"]
        # Alertmanager groups and inhibits on `service`. The compose Prometheus adds it as an
        # external label, but a shared one (kube-prometheus-stack) does not: the rule must.
        assert labels.get("service") == "chatlens", rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
        anchor = str(annotations["runbook_url"]).rsplit("#", 1)[-1]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/runbook.md"


def test_every_alert_is_shown_firing_and_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {str(rule["alert"]) for rule in alerts()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent"


def test_rule_group_names_are_unique_across_files() -> None:
    """One PrometheusRule may carry several files' groups; a repeated name is refused."""
    names = [
        group["name"]
        for path in sorted((PROMETHEUS / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert len(names) == len(set(names)), names
