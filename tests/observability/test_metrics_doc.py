"""docs/metrics.md lists exactly the metrics of the catalogue, with their types and labels."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatlens.observability.metrics import Metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
TYPES = frozenset({"counter", "gauge", "histogram"})
NAME_CELL = re.compile(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`")
NONE = frozenset({"—", "-", ""})
# Families of prometheus_client's default collectors that exist only where the platform has
# them (process_*: Linux /proc; python_gc_*: CPython): documented even where absent.
PLATFORM_FAMILIES = frozenset(
    {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
        "python_info",
        "python_gc_objects_collected_total",
        "python_gc_objects_uncollectable_total",
        "python_gc_collections_total",
    }
)


@dataclass(frozen=True)
class Row:
    name: str
    type: str
    labels: frozenset[str]
    line: int


def query_name(name: str, kind: str) -> str:
    """The name users query: prometheus_client drops `_total` from a counter's family name."""
    return f"{name}_total" if kind == "counter" else name


def documented(text: str) -> dict[str, Row]:
    """Every table row whose first cell is a backticked metric name."""
    rows: dict[str, Row] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.lstrip().startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = NAME_CELL.fullmatch(cells[0])
        if match is None:
            continue
        assert len(cells) >= 4, f"docs/metrics.md:{number}: expected 4 cells: {line}"
        name, kind, labels = match.group(1), cells[1], cells[2]
        assert kind in TYPES, f"docs/metrics.md:{number}: type {kind!r} not one of {TYPES}"
        found = frozenset(re.findall(r"`([^`]+)`", labels))
        assert found or labels in NONE, (
            f"docs/metrics.md:{number}: labels must be backticked names or —: {labels!r}"
        )
        assert name not in rows, f"docs/metrics.md:{number}: {name} documented twice"
        rows[name] = Row(name, kind, found, number)
    return rows


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    # Single-process mode, so the default collectors are registered too.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return Metrics()


def test_the_metrics_doc_matches_the_catalogue(metrics: Metrics) -> None:
    rows = documented(DOC.read_text(encoding="utf-8"))
    assert rows, "no metric rows found in docs/metrics.md"

    # chatlens's own metrics, with their declared label names.
    own: dict[str, tuple[str, frozenset[str]]] = {}
    for metric, labelnames in metrics.declared():
        family = metric.describe()[0]
        name = query_name(family.name, family.type)
        own[name] = (family.type, frozenset(labelnames))

    # Everything the registry exposes here, default collectors included.
    collected: dict[str, tuple[str, frozenset[str]]] = {}
    for family in metrics.registry.collect():
        labels = frozenset(k for s in family.samples for k in s.labels if k != "le")
        name = query_name(family.name, family.type)
        collected[name] = own.get(name, (family.type, labels))
    assert set(own) <= set(collected)

    missing = sorted(set(collected) - set(rows))
    # A platform-specific default family may be documented though absent here.
    unknown = sorted(set(rows) - set(collected) - PLATFORM_FAMILIES)
    assert not missing and not unknown, (
        f"collected but not in docs/metrics.md: {missing}; "
        f"documented but not in the catalogue: {unknown}"
    )

    wrong_type = {
        name: f"documented {rows[name].type}, is {kind}"
        for name, (kind, _) in collected.items()
        if rows[name].type != kind
    }
    assert not wrong_type, f"wrong types in docs/metrics.md: {wrong_type}"

    wrong_labels = {
        name: f"documented {sorted(rows[name].labels)}, is {sorted(labels)}"
        for name, (_, labels) in collected.items()
        if rows[name].labels != labels
    }
    assert not wrong_labels, f"wrong labels in docs/metrics.md: {wrong_labels}"
