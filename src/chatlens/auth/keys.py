"""API key format: `cl_` + 32 random bytes, URL-safe; stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "cl_"
_KEY_BYTES = 32
# token_urlsafe(32) is 43 characters; anything else cannot be one of our keys.
KEY_LENGTH = len(KEY_PREFIX) + 43
DISPLAY_PREFIX_LENGTH = 10


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The part of a key that may be shown and logged to tell keys apart."""
    return key[:DISPLAY_PREFIX_LENGTH]


def looks_like_key(value: str) -> bool:
    return len(value) == KEY_LENGTH and value.startswith(KEY_PREFIX)
