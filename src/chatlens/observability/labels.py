"""Bounds on label values that callers or an upstream choose (docs/metrics.md, "Cardinality")."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# The value every label value beyond a label's bound becomes (docs/metrics.md, "Cardinality").
OTHER = "other"
# Longer values are never kept: a label value is a name, not a text.
MAX_LABEL_LENGTH = 100
# Values a recogniser (the price table) may admit beyond the known ones.
_MAX_RECOGNISED = 100


class LabelBound:
    """The values one label keeps when a caller or an upstream chooses them.

    Known values keep theirs, and so do values a recogniser accepts (a model the price
    table prices) and the first `cap` others seen; every later one becomes `other`. The
    set only grows, so a value keeps the same series for the life of the process.
    """

    __slots__ = ("_recognisers", "cap", "known", "seen")

    def __init__(self, known: Iterable[str | None] = (), *, cap: int) -> None:
        self.known = {v for v in known if v is not None and 0 < len(v) <= MAX_LABEL_LENGTH}
        self.seen: set[str] = set()
        self.cap = cap
        self._recognisers: list[Callable[[str], bool]] = []

    def recognise(self, accepts: Callable[[str], bool]) -> None:
        """Also keep the values `accepts` says are known (up to a hundred of them)."""
        self._recognisers.append(accepts)

    def __call__(self, value: Any) -> str:
        if value in self.known or value in self.seen:
            return str(value)
        if type(value) is not str or not value or len(value) > MAX_LABEL_LENGTH:
            return OTHER
        recognised = any(accepts(value) for accepts in self._recognisers)
        if recognised and len(self.known) < _MAX_RECOGNISED:
            self.known.add(value)
        elif len(self.seen) < self.cap:
            self.seen.add(value)
        else:
            return OTHER
        return value

    @property
    def max_values(self) -> int:
        """How many values this label can show at most, `other` included."""
        return max(len(self.known), _MAX_RECOGNISED if self._recognisers else 0) + self.cap + 1
