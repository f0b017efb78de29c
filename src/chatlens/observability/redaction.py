"""Masks personal data and secrets in text: e-mails, phones, card numbers, API keys, tokens."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_CHATLENS_KEY = re.compile(r"\bcl_[A-Za-z0-9_-]{20,}")
_BEARER = re.compile(
    r"(?i)\b(bearer|token|api[_-]?key|password|secret)(\s*[:=]\s*|\s+)[^\s,;\"']{8,}"
)
# 13-19 digits, optionally grouped by spaces or dashes; kept only if Luhn-valid.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# International or local phone numbers: 7+ digits with the usual separators.
_PHONE = re.compile(r"(?<![\w+-])\+?\d[\d ()\-]{6,}\d(?![\w-])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Every pattern needs a digit, "@", "cl_" or one of the secret words: text without any of
# them (most log strings, event names included) skips the five passes.
_TRIGGER = re.compile(r"[\d@]|cl_|(?i:bearer|token|api.?key|password|secret)")

MASK_EMAIL = "[email]"
MASK_CARD = "[card]"
MASK_PHONE = "[phone]"
MASK_SECRET = "[secret]"  # noqa: S105  (the mask, not a password)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return MASK_CARD if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    if _DATE.match(match.group()):
        return match.group()
    digits = sum(ch.isdigit() for ch in match.group())
    return MASK_PHONE if 7 <= digits <= 15 else match.group()


# Short strings recur from line to line (user agents, paths, platforms, error types): their
# masked form is remembered instead of running the five patterns again. A user agent has
# digits, so without this every access line took all five passes.
_CACHED_LENGTH = 256


def redact(text: str) -> str:
    """The text with personal data and secrets masked."""
    if len(text) <= _CACHED_LENGTH:
        return _redact_short(text)
    return _redact(text)


@lru_cache(maxsize=4096)
def _redact_short(text: str) -> str:
    return _redact(text)


def _redact(text: str) -> str:
    if _TRIGGER.search(text) is None:
        return text
    text = _CHATLENS_KEY.sub(MASK_SECRET, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK_SECRET}", text)
    text = _EMAIL.sub(MASK_EMAIL, text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)


def redact_value(value: Any) -> Any:
    """Redact every string inside a value (dicts, lists and tuples are walked)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value
