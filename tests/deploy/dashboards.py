"""The Grafana dashboards as data: their queries, with Grafana's variables filled in."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"

# What Grafana puts in for the variables when a user picks "All" (allValue ".*").
ALL = ".*"
DEFAULT_RATE_INTERVAL_S = 60  # 4 x a 15 s scrape interval, as Grafana computes it
RANGE = "1h"


@dataclass(frozen=True)
class Query:
    dashboard: str  # uid
    where: str  # panel title, or "annotation: name"
    ref: str
    expr: str
    min_interval_s: int  # a panel's "interval" (Grafana's minimum $__interval), else 0
    datasource: str  # the datasource uid, e.g. "${datasource}" or "${loki}"

    @property
    def name(self) -> str:
        return f"{self.dashboard} / {self.where} / {self.ref}"

    def for_prometheus(self, job: str) -> str:
        """The query as Grafana would send it, with "All" chosen for every variable."""
        rate_interval = f"{max(DEFAULT_RATE_INTERVAL_S, self.min_interval_s)}s"
        expr = self.expr.replace("$__rate_interval", rate_interval).replace("$__range", RANGE)
        expr = expr.replace('job=~"$job"', f'job=~"{job}"')
        return re.sub(r"\$\{?[a-z_]+\}?", ALL, expr)


def load() -> dict[str, dict[str, Any]]:
    boards = (json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json")))
    return {board["uid"]: board for board in boards}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _seconds(interval: str | None) -> int:
    if not interval:
        return 0
    match = re.fullmatch(r"(\d+)([smhd])", interval)
    assert match, f"unexpected interval {interval!r}"
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def queries(board: dict[str, Any]) -> Iterator[Query]:
    """Every panel target and every query annotation of a dashboard."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield Query(
                dashboard=board["uid"],
                where=panel["title"],
                ref=target["refId"],
                expr=target["expr"],
                min_interval_s=_seconds(panel.get("interval")),
                datasource=target["datasource"]["uid"],
            )
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            yield Query(
                dashboard=board["uid"],
                where=f"annotation: {annotation['name']}",
                ref="A",
                expr=annotation["expr"],
                min_interval_s=0,
                datasource=annotation["datasource"]["uid"],
            )


def label_values(board: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(variable, metric, label) for each `label_values(metric, label)` variable."""
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
        assert match, f"{board['uid']}: variable {variable['name']} is not label_values(...)"
        yield variable["name"], match.group(1), match.group(2)
