"""The `chatlens` command: serve, migrate, manage users and API keys, and the data."""

# Each module registers its commands on `app`, in the order `chatlens --help` lists them.
# isort: off
from chatlens.cli import serve  # noqa: F401
from chatlens.cli import admin  # noqa: F401
from chatlens.cli import data  # noqa: F401

# isort: on
from chatlens.cli.base import app

__all__ = ["app"]
