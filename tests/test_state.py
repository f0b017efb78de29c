"""The application state: one part per type, read back as the type asked for."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from chatlens.state import AppState


@dataclass(frozen=True)
class Part:
    name: str


def test_a_part_is_read_back_by_its_type() -> None:
    state = AppState(Part("a"), 3)
    assert state.get(Part) == Part("a")
    assert state.get(int) == 3


def test_replace_makes_a_new_state_and_keeps_the_old_one() -> None:
    before = AppState(Part("a"))
    after = before.replace(Part("b"), "more")
    assert (before.get(Part), after.get(Part), after.get(str)) == (Part("a"), Part("b"), "more")
    with pytest.raises(LookupError, match="no str in the application state"):
        before.get(str)


def test_two_parts_of_one_type_are_refused() -> None:
    with pytest.raises(ValueError, match="one part per type"):
        AppState(Part("a"), Part("b"))
