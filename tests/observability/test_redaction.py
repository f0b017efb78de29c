"""Personal data and secrets are masked in every string field of every log line."""

from __future__ import annotations

import io
import re

import orjson
import pytest
import structlog

from chatlens.observability.logging import configure_logging
from chatlens.observability.redaction import redact


@pytest.mark.parametrize(
    ("text", "secret", "mask"),
    [
        ("write to jane.doe+vip@example.co.uk please", "jane.doe+vip@example.co.uk", "[email]"),
        ("call me on +7 (999) 123-45-67", "123-45-67", "[phone]"),
        ("my number is 8 800 555 35 35", "555 35 35", "[phone]"),
        ("card 4111 1111 1111 1111 was declined", "4111 1111 1111 1111", "[card]"),
        ("card 5500-0000-0000-0004", "5500-0000-0000-0004", "[card]"),
        ("pan 4000056655665556", "4000056655665556", "[card]"),
        ("key cl_" + "A" * 43, "cl_" + "A" * 43, "[secret]"),
        ("Authorization: Bearer sk-abcdef1234567890", "sk-abcdef1234567890", "[secret]"),
        ("password=hunter2hunter2", "hunter2hunter2", "[secret]"),
        # No digit, "@" or "cl_" anywhere: only the word itself says it is a secret.
        ("password=correcthorsebattery", "correcthorsebattery", "[secret]"),
        ("X-Api-Key: abcdefghijklmnop", "abcdefghijklmnop", "[secret]"),
    ],
)
def test_each_kind_is_masked(text: str, secret: str, mask: str) -> None:
    # Short strings' masked forms are remembered, long ones masked afresh: both, and twice.
    for value in (text, text, f"{text} {'.' * 300}", f"{'.' * 300} {text}"):
        masked = redact(value)
        assert secret not in masked
        assert mask in masked


@pytest.mark.parametrize(
    "text",
    [
        "order 12345 shipped",
        "2026-11-23T14:31:17.123Z",
        "1396b3be-da07-1234-5678-ef0f5c6dc4f1",
        "trace 4bf92f3577b34da6a3ce929d0e0e4736",
        "4111111111111112",  # not Luhn-valid: an order number, not a card
        "api_key_created",
    ],
)
def test_ids_dates_and_event_names_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_identifiers_are_passed_as_they_are_but_a_secret_in_one_is_not() -> None:
    # A trace id whose digits happen to form a Luhn-valid card number is still a trace id.
    trace_id = "ab4111111111111111cd0123456789ef"
    for identifier in (trace_id, "00f067aa0ba902b7", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"):
        assert redact(identifier) == identifier
    # Only the exact shapes: a key in a request id, or upper-case hex, is still scanned.
    assert redact("sk-proj-" + "a" * 40) == "[secret]"
    assert redact("req " + "4111 1111 1111 1111") == "req [card]"


def test_every_string_field_of_a_line_is_redacted() -> None:
    stream = io.BytesIO()
    options = {"level": "INFO", "fmt": "json", "service": "chatlens", "version": "t"}
    configure_logging(**options, environment="test", stream=stream)
    try:
        structlog.get_logger("chatlens.test.redaction").warning(
            "customer_wrote",
            note="reach me at bob@example.com",
            nested={"phone": "+44 20 7946 0958", "list": ["4111 1111 1111 1111"]},
        )
    finally:
        configure_logging(**options, environment="test")
    line = orjson.loads(stream.getvalue().splitlines()[-1])
    assert line["note"] == "reach me at [email]"
    assert line["nested"]["phone"] == "[phone]"
    assert line["nested"]["list"] == ["[card]"]
    assert line["level"] == "WARNING"


def test_request_fields_stay_with_their_request() -> None:
    """Fields bound in a task started from a request never reach the request's own lines."""
    import asyncio

    from chatlens.observability.logging import bind, context, start_request

    stream = io.BytesIO()
    options = {"level": "INFO", "fmt": "json", "service": "chatlens", "version": "t"}
    configure_logging(**options, environment="test", stream=stream)
    log = structlog.get_logger("chatlens.test.context")

    async def background() -> None:
        bind(conversation_id="from-the-task")
        log.info("in_task")

    async def request(request_id: str) -> None:
        start_request({"request_id": request_id})
        bind(user_id="u1")
        await asyncio.create_task(background())
        log.info("in_request")

    try:
        asyncio.run(request("r1"))
        asyncio.run(request("r2"))
        assert context() == {}
    finally:
        configure_logging(**options, environment="test")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(ln["event"], ln["request_id"], ln["user_id"]) for ln in lines] == [
        ("in_task", "r1", "u1"),
        ("in_request", "r1", "u1"),
        ("in_task", "r2", "u1"),
        ("in_request", "r2", "u1"),
    ]
    assert [ln.get("conversation_id") for ln in lines] == ["from-the-task", None] * 2
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ln["timestamp"]) for ln in lines
    )


# One sample of each format (made up, in the issuer's shape), by detect-secrets' name of it.
SECRETS = {
    "OpenAI Token": "sk-Ab3dEf6hIj9kLm2nOp5qT3BlbkFJr8sTu1vWx4yZa7bC0dEf3gHi",
    "OpenAI project key": "sk-proj-Q2w3E4r5T6y7U8i9O0pAsDfGhJkLzXcVbNm1234567890abcd",
    "Anthropic key": "sk-ant-api03-Zx9Cv8Bn7Mq6Wr5Et4Yu3Io2Pa1SdFgHjKl",
    "AWS Access Key": "AKIAIOSFODNN7EXAMPL3",
    "AWS secret": "aws_secret_access_key = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'",
    "GitHub Token": "ghp_1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ",
    "GitHub fine-grained token": "github_pat_11ABCDEFG0123456789_abcdefghijKLMNOPQRSTuvwxyz",
    "GitLab Token": "glpat-Xy7Zq9Wr3Tu5Io1Pa2Sd",
    "Slack Token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "Slack webhook": "https://hooks.slack.com/services/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",
    "Stripe Access Key": "sk_live_4eC39HqLyjWDarjtT1zdp7dcXyZ1234567890AbCdE",
    "Stripe test key": "rk_test_51H8aBcDeFgHiJkLmNoPqRsTu",
    "JSON Web Token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "Private Key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0\n-----END RSA PRIVATE KEY-----",
    "SendGrid API Key": "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",
    "Twilio API Key": "SK0123456789abcdef0123456789abcdef",
    "Google API key": "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
    "Azure Storage Account access key": "AccountKey=" + "Ab3dEf6hIj9kLm2n" * 5 + "Op5qTu1v",
    "Basic Auth Credentials": "https://admin:Tr0ub4dor3@db.example.com/orders",
    "Telegram Bot Token": "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1",
    "Mailchimp Access Key": "0123456789abcdef0123456789abcdef-us12",
    "NPM tokens": "//registry.npmjs.org/:_authToken=npm_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7c",
    "PyPI Token": "pypi-AgEIcHlwaS5vcmc" + "Ab3dEf6hIj9kLm2nOp5q" * 4,
    "Discord Bot Token": "MTAxMjM0NTY3ODkwMTIzNDU2.Gh7IjK.AbCdEfGhIjKlMnOpQrStUvWxYz0",
    "Square OAuth Secret": "sq0csp-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3",
    "Hugging Face token": "hf_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb",
    "Artifactory Credentials": "AKCp8jQ9Wr3Tu5Io1Pa2Sd4Fg",
    "Cloudant Credentials": "cloudant_password='" + "0123456789abcdef" * 4 + "'",
    "IBM Cloud IAM Key": "ibm_cloud_iam_api_key: Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3j",
    "IBM COS HMAC Credentials": "cos_hmac_secret_access_key = " + "0123456789abcdef" * 3,
    "SoftLayer Credentials": "softlayer_api_key: " + "0123456789abcdef" * 4,
    "chatlens key": "cl_" + "Zq7" * 15,
}


def _secret_part(sample: str) -> str:
    """The part of a sample that must not survive: the value after `=`/`:`, or the whole."""
    for separator in ("'", ":_authToken=", "AccountKey=", ": ", " = ", "://admin:"):
        if separator in sample:
            value = sample.split(separator, 1)[1].strip("'")
            return value.split("@", 1)[0]
    return sample


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_each_secret_format_is_masked(name: str) -> None:
    sample = SECRETS[name]
    secret = _secret_part(sample)
    for text in (
        f"upstream said: {sample} was rejected",
        f"{sample}",
        f"{'.' * 300} {sample}\n",
        f'config {{"{sample}"}}',
    ):
        masked = redact(text)
        assert "[secret]" in masked, (name, masked)
        # No piece of it either: not its tail, which a fixed-length pattern would leave.
        assert secret[-10:] not in masked, (name, masked)
        assert secret[:24] not in masked or len(secret) <= 10, (name, masked)


def test_every_format_detect_secrets_knows_has_a_sample() -> None:
    """A format added by a newer detect-secrets gets a sample here, so its masking is tested."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    known = {
        name
        for name, plugin in get_mapping_from_secret_type_to_class().items()
        if issubclass(plugin, RegexBasedDetector)
    }
    # The registry is no documented API of detect-secrets: it must still list its formats.
    assert len(known) >= 20
    assert known - {"Public IP (ipv4)"} <= set(SECRETS)


@pytest.mark.parametrize(
    "text",
    [
        "http_request_duration_seconds",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0.0.0 Safari/537.36",
        "/api/conversations/{conversation_id}/messages",
        "APIConnectionError",
        "listening on http://0.0.0.0:8000",
    ],
)
def test_names_agents_and_urls_are_not_taken_for_secrets(text: str) -> None:
    assert redact(text) == text
