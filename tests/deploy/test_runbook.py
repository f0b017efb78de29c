"""docs/runbook.md: a usable section per alert, the incidents, and no made-up settings."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from chatlens.settings import Settings, env_name
from tests.helpers import Server, env_without_chatlens, require_tool

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


def _code_spans() -> list[str]:
    """Inline code, a span possibly wrapped over two lines; fenced blocks left out."""
    text = re.sub(r"^```.*?^```", "", RUNBOOK.read_text(), flags=re.MULTILINE | re.DOTALL)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)]


def _chatlens_invocations() -> list[list[str]]:
    """The argument lists the runbook gives the chatlens CLI: directly, or through a compose
    service whose entrypoint is chatlens (`run … chatlens ARGS`, `--entrypoint chatlens SVC
    ARGS`)."""
    found = []
    for span in _code_spans():
        span = re.sub(r"<[^>]+>", "X", span)  # <file>, <revision of the old release>, ...
        for command in re.split(r"&&|\|", span):
            command = command.strip()
            is_run = command.startswith("docker compose") and " run " in command
            if not (command.startswith("chatlens ") or is_run):
                continue  # jq programs, PromQL, curl: not the CLI's
            words = shlex.split(command)
            if words[0] == "chatlens":
                found.append(words[1:])
            elif words[:2] == ["docker", "compose"] and "run" in words:
                rest = words[words.index("run") + 1 :]
                entrypoint = None
                while rest[0].startswith("--"):  # compose's own options, up to the service
                    if rest[0] == "--entrypoint":
                        entrypoint = rest[1]
                        rest = rest[1:]
                    rest = rest[1:]
                service, args = rest[0], rest[1:]
                if entrypoint == "chatlens" or (entrypoint is None and service == "chatlens"):
                    found.append(args)
    return found


def test_every_chatlens_command_in_the_runbook_parses() -> None:
    """Subcommands exist, options exist, required options are given (nothing is run).

    Typer carries its own copy of click, so groups are told apart by what they can do and
    usage errors by their `format_message`.
    """
    import typer

    from chatlens.cli import app

    invocations = _chatlens_invocations()
    assert len(invocations) >= 10
    root = typer.main.get_command(app)
    for args in invocations:
        command: Any = root
        context = command.make_context("chatlens", list(args), resilient_parsing=True)
        rest = list(args)
        while hasattr(command, "resolve_command"):  # a group: go down to the subcommand
            name, command, rest = command.resolve_command(context, rest)
            assert command is not None, args
            context = command.make_context(name, list(rest), parent=context,
                                           resilient_parsing=True)  # fmt: skip
        try:
            # resilient_parsing is inherited from the parent: switched off to check for real.
            command.make_context(command.name, list(rest), parent=context.parent,
                                 resilient_parsing=False)  # fmt: skip
        except Exception as error:
            if not hasattr(error, "format_message"):
                raise
            raise AssertionError(f"chatlens {' '.join(args)}: {error.format_message()}") from None


def test_every_jq_filter_in_the_runbook_reads_real_log_lines(tmp_path: Path) -> None:
    """Run against what `docker compose logs --no-log-prefix` shows: the JSON lines of a real
    `chatlens serve` mixed with its plain-text banner."""
    jq = require_tool("jq", "Debian package jq")
    programs = re.findall(r"\| jq -cR '([^']+)'", RUNBOOK.read_text())
    assert len(programs) >= 6
    server = Server(tmp_path, env_without_chatlens())
    try:
        key = re.findall(r"cl_[A-Za-z0-9_-]{43}", server.output)[0]
        headers = {"Authorization": f"Bearer {key}"}
        httpx.post(f"{server.url}/chat", json={"message": "hi"}, headers=headers, timeout=10)
        httpx.get(f"{server.url}/no/such/page", timeout=10)
    finally:
        server.stop()
    shown = server.log.read_text() + server.stdout.read_text()
    assert '"event":"http_request"' in shown
    for program in programs:
        done = subprocess.run(
            [jq, "-cR", program], input=shown, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{program}: {done.stderr}"
    access = re.findall(r"\| jq -cR '(fromjson\? \| select\(\.event==\"http_request\"[^']+)'",
                        RUNBOOK.read_text())  # fmt: skip
    assert access, "the 5xx filter is gone"
