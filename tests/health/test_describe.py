"""Errors and backend messages are reduced to text safe to show anyone."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy.exc import OperationalError

from chatlens.health import service


def _raised(outer: Exception, inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), "TimeoutError: timed out"),
        (
            ConnectionRefusedError(111, "Connect call failed ('10.1.2.3', 5432)"),
            "ConnectionRefusedError: connection refused",
        ),
        (socket.gaierror(-2, "Name or service not known: db.internal"), "gaierror: host not found"),
        (
            _raised(RuntimeError("postgres://admin:pw@db.internal/x"), ConnectionResetError()),
            "RuntimeError: connection failed",
        ),
        (
            type("InvalidPasswordError", (Exception,), {})('password for "admin" failed'),
            "InvalidPasswordError: authentication failed",
        ),
        (
            OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "10.1.2.3:5432")),
            "OperationalError: connection refused",
        ),
        (ValueError("dsn=postgres://admin:pw@db.internal/x"), "ValueError: check failed"),
    ],
    ids=["timeout", "refused", "dns", "wrapped", "auth", "sqlalchemy", "other"],
)
def test_describe_names_the_class_and_a_generic_phrase_only(
    exc: BaseException, expected: str
) -> None:
    assert service.describe(exc) == expected


def test_redact_drops_urls_and_host_ports_and_truncates() -> None:
    text = service.redact(
        "failed: https://u:p@api.example.com/v1 via proxy.local:3128 " + "x" * 500
    )
    assert "example.com" not in text and "proxy.local" not in text and "3128" not in text
    assert text.startswith("failed: <redacted> via <redacted>")
    assert len(text) <= 120
