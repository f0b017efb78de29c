"""Masks personal data and secrets in text: e-mails, phones, card numbers, API keys, tokens.

Secret formats come from Yelp's detect-secrets: the regular expressions of its regex
plugins (AWS, GitHub, GitLab, Slack, Stripe, JWT, private keys, ...), read through its
plugin registry, so an upgrade of the package brings new formats with it. Its documented
API (SecretsCollection, settings) scans files and lists no plugin, so the registry in
`detect_secrets.core.plugins.util` is used as it is; tests/observability/test_redaction.py
fails if it stops listing the formats or a format stops being masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, cast

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins.base import RegexBasedDetector

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
# Every pattern above needs a digit, "@", "cl_" or one of the secret words: text without
# any of them (most log strings, event names included) skips these five passes.
_TRIGGER = re.compile(r"[\d@]|cl_|(?i:bearer|token|api.?key|password|secret)")

# Detectors whose finding is no secret: an IP address is not masked (the access log keeps
# the client's address on purpose, in a field of its own).
_NOT_SECRETS = frozenset({"Public IP (ipv4)"})
# Formats detect-secrets 1.5 does not know, or knows only in an older shape: OpenAI's
# project and service-account keys (its plugin wants the legacy "T3BlbkFJ" marker),
# Anthropic's, Stripe's test and restricted keys of any length, GitHub's fine-grained
# tokens, Slack's app tokens, Google API keys and Hugging Face tokens. (A private key's
# whole PEM block is _PEM below: the plugin matches its header line alone.)
_EXTRA_SECRETS = (
    r"\bsk-[A-Za-z0-9_-]{20,}",
    r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}",
    r"\bwhsec_[0-9A-Za-z]{16,}",
    r"\bgithub_pat_[A-Za-z0-9_]{22,}",
    r"\bxapp-\d-[A-Za-z0-9-]{10,}",
    r"\bAIza[0-9A-Za-z_-]{35}",
    r"\bhf_[A-Za-z0-9]{30,}",
)
# A match that stops inside a token (a fixed-length pattern, a longer key of a newer
# shape) is masked to the token's end, so no tail of the secret is left.
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-.+/=]*")


def _scoped(pattern: re.Pattern[str]) -> str:
    flags = "".join(
        letter
        for flag, letter in ((re.IGNORECASE, "i"), (re.VERBOSE, "x"), (re.DOTALL, "s"))
        if pattern.flags & flag
    )
    return f"(?{flags}:{pattern.pattern})" if flags else f"(?:{pattern.pattern})"


def _secret_patterns() -> re.Pattern[str]:
    """Every secret format, one alternation: a text is scanned once, not once per format."""
    patterns = list(_EXTRA_SECRETS)
    plugins: dict[str, type[Any]] = get_mapping_from_secret_type_to_class()
    for secret_type, plugin in sorted(plugins.items()):
        if secret_type in _NOT_SECRETS or not issubclass(plugin, RegexBasedDetector):
            continue
        # `denylist` is a class attribute of every regex plugin, declared as a property.
        denylist: Iterable[re.Pattern[str]] = cast(Any, plugin).denylist
        patterns.extend(_scoped(pattern) for pattern in denylist)
    return re.compile("|".join(patterns))


_SECRETS = _secret_patterns()
# Scanning for every format is costly (about a µs per character), so only the text around
# a place that could hold one is scanned: a run of 16 or more key characters (every format
# of a random key has one; `+/=` for base64), or the marker of a shorter or spaced one
# (a private key header, credentials in a URL, a Slack or an Artifactory token). A match
# may begin up to _BEFORE characters ahead of its run (`aws_secret_access_key = '...'`, a
# webhook URL).
# Markers are plain substrings: `in` is far cheaper than a regex alternation.
# tests/observability/test_redaction.py checks that each format is found this way.
_RUN = re.compile(r"[A-Za-z0-9_+/=-]{16,}")
_MARKERS = ("PRIVATE KEY", "PuTTY", "xox", "://")
_ARTIFACTORY = re.compile(r"\bA(?:P[\dA-F]|KC)[A-Za-z0-9]{8}")
_BEFORE = 80
_AFTER_RUN = 8
_AFTER_MARKER = 120
# A PEM block may be longer than any window: masked on its own, header to footer.
_PEM = re.compile(
    r"-----BEGIN[A-Z ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
    r"(?:-----END[A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
)


def _windows(text: str) -> list[tuple[int, int]]:
    """The stretches of `text` that could hold a secret, merged, in order."""
    found = [(max(0, run.start() - _BEFORE), run.end() + _AFTER_RUN) for run in _RUN.finditer(text)]
    for marker in _MARKERS:
        at = text.find(marker)
        while at != -1:
            found.append((max(0, at - _BEFORE), at + _AFTER_MARKER))
            at = text.find(marker, at + 1)
    if "AP" in text or "AKC" in text:
        found += [
            (max(0, m.start() - _BEFORE), m.end() + _AFTER_MARKER)
            for m in _ARTIFACTORY.finditer(text)
        ]
    if len(found) < 2:
        return found
    found.sort()
    merged = [found[0]]
    for start, end in found[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


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


def _mask_secrets(text: str) -> str:
    if "PRIVATE KEY" in text:
        text = _PEM.sub(MASK_SECRET, text)
    parts: list[str] = []
    done = 0
    for window_start, window_end in _windows(text):
        # pos/endpos, not a slice: lookbehinds still see the text before the window.
        for match in _SECRETS.finditer(text, max(window_start, done), window_end):
            start, end = match.span()
            if start < done or start == end:
                continue  # inside the tail of the previous one
            if _TOKEN_TAIL.fullmatch(text, end - 1, end):
                tail = _TOKEN_TAIL.match(text, end)
                end = tail.end() if tail is not None else end
            parts += (text[done:start], MASK_SECRET)
            done = end
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


# Short strings recur from line to line (user agents, paths, platforms, error types): their
# masked form is remembered instead of running the patterns again. A user agent has
# digits, so without this every access line took all the passes.
_CACHED_LENGTH = 256


# The identifiers on every line (trace and span ids, request ids, UUIDs): lowercase hex in
# these fixed shapes holds no secret format and no personal data. Returned at once, they
# neither take the secret scan (a 16-character run is a key-like run) nor fill the cache.
_IDENTIFIER = re.compile(
    r"[0-9a-f]{16}|[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


def redact(text: str) -> str:
    """The text with personal data and secrets masked."""
    if _IDENTIFIER.fullmatch(text) is not None:
        return text
    if len(text) <= _CACHED_LENGTH:
        return _redact_short(text)
    return _redact(text)


@lru_cache(maxsize=4096)
def _redact_short(text: str) -> str:
    return _redact(text)


def _redact(text: str) -> str:
    text = _mask_secrets(text)
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
