"""`python -m chatlens.cli`, as the `chatlens` script."""

from chatlens.cli import app

app()
