"""`chatlens export --to s3://…`: the same bytes as a local export, in the bucket.

S3 itself cannot run here: moto's server mode, a real HTTP server on 127.0.0.1 speaking the
S3 API, stands in for it (as MinIO would, through CHATLENS_S3_ENDPOINT_URL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chatlens.cli import app as cli
from tests.analytics.test_summary import seeded_database
from tests.helpers import free_port, require

runner = CliRunner()
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "chatlens-test",
    "AWS_SECRET_ACCESS_KEY": "chatlens-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
RANGE = ("--start", "2026-01-01", "--end", "2026-01-08")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        require(False, "moto[server] (PyPI)")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def invoke(url: str, endpoint: str, *args: str) -> Any:
    env = {"DATABASE_URL": url, "CHATLENS_S3_ENDPOINT_URL": endpoint, **CREDENTIALS}
    return runner.invoke(cli, list(args), env=env)


async def test_export_to_a_prefix_lands_under_the_usual_name(
    fresh_database_url: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    url = await seeded_database(fresh_database_url, "s3-export")
    s3 = _client(s3_endpoint)
    s3.create_bucket(Bucket="support-archive")

    def run() -> None:
        local = tmp_path / "local.jsonl"
        wrote = invoke(url, s3_endpoint, "export", *RANGE, "--format", "json", "-o", str(local))
        assert wrote.exit_code == 0, wrote.output
        up = invoke(
            url, s3_endpoint, "export", *RANGE, "--format", "json",
            "--to", "s3://support-archive/chatlens/daily/",
        )  # fmt: skip
        assert up.exit_code == 0, up.output
        key = "chatlens/daily/chatlens-conversation_metrics-2026-01-01-2026-01-07.jsonl"
        assert f"uploaded s3://support-archive/{key}" in up.output
        body = s3.get_object(Bucket="support-archive", Key=key)["Body"].read()
        assert body == local.read_bytes()
        assert len(body.splitlines()) == 4
        # An exact key is used as given; nothing is left behind locally.
        exact = invoke(
            url, s3_endpoint, "export", *RANGE, "--to", "s3://support-archive/latest.csv"
        )
        assert exact.exit_code == 0, exact.output
        csv = s3.get_object(Bucket="support-archive", Key="latest.csv")["Body"].read()
        assert csv.startswith(b"timestamp,")
        assert not list(Path.cwd().glob("chatlens-conversation_metrics-*"))

    await asyncio.to_thread(run)


async def test_a_missing_bucket_or_a_bad_url_is_a_clear_error(
    fresh_database_url: Any, s3_endpoint: str
) -> None:
    url = await seeded_database(fresh_database_url, "s3-export")

    def run() -> None:
        missing = invoke(url, s3_endpoint, "export", *RANGE, "--to", "s3://no-such-bucket/x/")
        assert missing.exit_code == 1
        assert "upload to s3://no-such-bucket/x/chatlens-conversation_metrics" in missing.output
        assert "NoSuchBucket" in missing.output
        assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in missing.output
        bad = invoke(url, s3_endpoint, "export", "--to", "https://example.com/x")
        assert bad.exit_code == 2
        assert "not an S3 URL" in bad.output
        both = invoke(url, s3_endpoint, "export", "--to", "s3://b/", "-o", "x.csv")
        assert both.exit_code == 2

    await asyncio.to_thread(run)
