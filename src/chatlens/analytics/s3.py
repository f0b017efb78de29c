"""Putting a file into S3-compatible storage (AWS S3, MinIO, Ceph), for exports.

Credentials and region come from boto3's usual sources (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, a profile, an instance role);
CHATLENS_S3_ENDPOINT_URL points at a store other than AWS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import structlog

log = structlog.get_logger(__name__)


class S3Error(Exception):
    """An upload that failed; the message says why, without credentials."""


@dataclass(frozen=True)
class Location:
    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse(url: str, default_name: str) -> Location:
    """`s3://bucket/prefix/` gets `default_name` appended; `s3://bucket/key` is used as is."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise S3Error(f"not an S3 URL (s3://bucket/prefix/): {url}")
    key = parts.path.lstrip("/")
    if not key or key.endswith("/"):
        key += default_name
    return Location(parts.netloc, key)


def upload(path: Path, location: Location, *, endpoint_url: str | None) -> None:
    try:
        import boto3
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise S3Error("S3 needs boto3: pip install 'chatlens[s3]'") from None
    client = boto3.client("s3", endpoint_url=endpoint_url)
    try:
        client.upload_file(str(path), location.bucket, location.key)
    except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
        raise S3Error(f"upload to {location.url} failed: {exc}") from None
    log.info(
        "export_uploaded",
        url=location.url,
        size_bytes=path.stat().st_size,
        endpoint=endpoint_url or "aws",
    )
