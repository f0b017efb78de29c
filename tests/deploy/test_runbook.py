"""docs/runbook.md: a usable section per alert, the incidents, and no made-up settings."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from chatlens.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTS = ROOT / "deploy" / "prometheus" / "rules" / "alerts.yml"
INCIDENTS = [
    "The service is down",
    "The database does not answer",
    "The tests fail",
    "Roll back a release",
    "Back up and restore",
]
PARTS = ("**What it means.**", "**First commands.**", "**Mitigate.**", "**Escalate.**")
# Read by the test suite and CI, and by deploy/compose.yaml (the image), not by the service.
NOT_SETTINGS = {"CHATLENS_TEST_DATABASE_URL", "CHATLENS_STRICT_TESTS", "CHATLENS_IMAGE"}


def _sections(level: str) -> dict[str, str]:
    """Heading -> body, for headings of exactly this level ("#" or "##")."""
    text = RUNBOOK.read_text()
    parts = re.split(rf"^{level} (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def alert_names() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def runbook_queries() -> list[str]:
    """Every `promq '…'` the runbook tells the reader to run."""
    return re.findall(r"promq '([^']+)'", RUNBOOK.read_text())


def test_every_alert_has_a_section_with_the_four_parts() -> None:
    top = _sections("#")
    alerts = _sections("##")
    for name in alert_names():
        assert name in alerts, f"no section for {name}"
        assert f"## {name}" in top["Alerts"], f"{name} is not under # Alerts"
        body = alerts[name]
        positions = [body.find(part) for part in PARTS]
        assert -1 not in positions and positions == sorted(positions), (name, positions)
        first = body[positions[1] : positions[2]]
        commands = re.findall(r"^\d\. `[^`]+`", first, flags=re.MULTILINE)
        assert len(commands) >= 3, f"{name}: fewer than three commands"


def test_the_incidents_of_seed_001_are_there_with_commands() -> None:
    top = _sections("#")
    sections = _sections("##")
    for incident in INCIDENTS:
        assert f"## {incident}" in top["Incidents"], incident
        assert len(re.findall(r"^\d\. ", sections[incident], flags=re.MULTILINE)) >= 3, incident


def test_every_setting_the_docs_name_exists() -> None:
    """A runbook that says "set CHATLENS_X" for a setting that does not exist wastes an
    incident's minutes."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named = set(re.findall(r"\bCHATLENS_[A-Z0-9_]+\b", path.read_text()))
        settings = {env_name(field) for field in Settings.model_fields}
        unknown = named - settings - NOT_SETTINGS
        assert not unknown, f"{path.name}: {sorted(unknown)}"


def test_the_runbook_has_queries_for_the_end_to_end_check() -> None:
    assert len(runbook_queries()) >= 20
