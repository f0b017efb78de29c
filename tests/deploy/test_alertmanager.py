"""Alertmanager's routing and inhibition, checked by the real amtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.helpers import require_tool

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("amtool", "Debian package prometheus-alertmanager")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_config_is_valid() -> None:
    done = amtool("check-config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def route(*labels: str) -> str:
    done = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_critical_goes_to_the_webhook_the_rest_to_email() -> None:
    assert route("severity=critical", "alertname=High5xxRate", "service=chatlens") == "slack"
    assert route("severity=warning", "alertname=HighCPU", "service=chatlens") == "email"
    assert route("severity=info", "alertname=Anything") == "email"


def test_grouping_and_inhibition() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["route"]["group_by"] == ["alertname", "service"]
    [inhibit] = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="ChatlensDown"']
    assert inhibit["equal"] == ["service"]


def test_no_secret_is_committed() -> None:
    text = CONFIG.read_text()
    assert "hooks.slack.com" not in text
    assert not re.search(r"^\s*(smtp_auth_password|api_url):", text, flags=re.MULTILINE)
    assert "smtp_auth_password_file" in text and "api_url_file" in text
