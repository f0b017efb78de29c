"""chatlens: an AI customer-support chat service, observable from the first request."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chatlens")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
