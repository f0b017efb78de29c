"""src/ uses the libraries' public API only: none of the private attributes it once reached.

The OpenTelemetry SDK's span processor and tracer scope, prometheus_client's label names,
children and registry internals, aiosqlite's connection and execute: a private attribute
changes without notice in any release, and code built on one breaks silently (spans that
processors never see, metrics that stop counting).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Attribute names, as reached with a dot or named in getattr/hasattr/setattr.
PRIVATE = (
    "_active_span_processor",  # opentelemetry.sdk.trace.TracerProvider
    "_instrumentation_scope",  # opentelemetry.sdk.trace.Tracer
    "_KnownChildren",  # chatlens's old subclass of prometheus_client's metric internals
    "_labelnames",  # prometheus_client.metrics.MetricWrapperBase
    "_metrics",  # prometheus_client's children, and its registry's
    "_execute",  # aiosqlite.Connection
    "_conn",  # aiosqlite.Connection
)


def _uses(text: str, name: str) -> list[int]:
    """Lines reaching `name` as an attribute (`x._name`, `getattr(x, "_name")`); a class
    name (capitalised) counts anywhere. A function of our own that happens to share the
    name (`def _metrics(...)`) is not a use."""
    bare = rf"|\b{name}\b" if name.lstrip("_")[:1].isupper() else ""
    pattern = re.compile(rf"(\.{name}\b|[\"']{name}[\"']{bare})")
    return [
        number
        for number, line in enumerate(text.splitlines(), start=1)
        if pattern.search(line) and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("name", PRIVATE)
def test_src_reaches_no_private_attribute(name: str) -> None:
    found = [
        f"{path.relative_to(SRC.parent)}:{line}"
        for path in sorted(SRC.rglob("*.py"))
        for line in _uses(path.read_text(encoding="utf-8"), name)
    ]
    assert found == [], f"{name} used in {found}"


def test_the_check_finds_what_it_looks_for() -> None:
    assert _uses("processor = provider._active_span_processor", "_active_span_processor") == [1]
    assert _uses('getattr(tracer, "_instrumentation_scope", None)', "_instrumentation_scope")
    assert _uses("await connection._execute(fn)", "_execute") == [1]
    assert _uses("class Counter(_KnownChildren, prometheus_client.Counter):", "_KnownChildren")
    assert not _uses("self._metrics_dir = path", "_metrics")
    assert not _uses("async def _metrics(request: Request) -> Metrics:", "_metrics")
    assert _uses("families = registry._metrics", "_metrics") == [1]
    assert not _uses("await self._execute_all()", "_execute")
    assert not _uses("# wrapper._labelnames was read here once", "_labelnames")
