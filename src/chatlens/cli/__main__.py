"""`python -m chatlens.cli`, as the `chatlens` script."""

from chatlens.cli import app

if __name__ == "__main__":
    app()
