"""Helpers shared by tests: strictness about real components and settings for a database."""

from __future__ import annotations

import os
from typing import Any

import pytest

from chatlens.settings import Settings, load_settings

STRICT = os.environ.get("CHATLENS_STRICT_TESTS") == "1"


def require(available: bool, what: str) -> None:
    """Skip when a real component is missing — or fail, under CHATLENS_STRICT_TESTS=1."""
    if available:
        return
    if STRICT:
        pytest.fail(f"{what} is required (CHATLENS_STRICT_TESTS=1)")
    pytest.skip(f"{what} is not available")


def make_settings(database_url: str, **overrides: Any) -> Settings:
    return load_settings(
        database_url=database_url, environment="test", bootstrap_admin=False, **overrides
    )
