"""S3 for podtools: a boto3 client from the C2D_S3_* variables the engine (or the pod's Secret)
gives the sandbox, the same names the services read (c2d_common/storage.py, docs/storage.md).

boto3 is imported only when a job uses S3: it takes a quarter of a second to import.
"""

from __future__ import annotations

import os
from typing import Any  # only loaded with boto3, which loads typing anyway

# One client per key (boto3 clients are thread-safe): the inputs' and, for a result asset read
# from an S3 result store with a key of its own, the store's.
_clients: dict[str, Any] = {}


def part_bytes() -> int:
    return max(5 * 1024 * 1024, int(os.environ.get("C2D_S3_PART_BYTES") or 16 * 1024 * 1024))


def concurrency() -> int:
    return max(1, int(os.environ.get("C2D_S3_CONCURRENCY") or 8))


def client(read_timeout: float = 60, bucket: str = "") -> Any:
    """The boto3 S3 client for `bucket`: with the C2D_S3_RESULT_* key for the result store's
    bucket (C2D_S3_RESULT_BUCKET) where the engine gave one, else with the C2D_S3_* key."""
    env = os.environ.get
    prefix = "C2D_S3_RESULT_" if bucket and bucket == env("C2D_S3_RESULT_BUCKET") else "C2D_S3_"
    if prefix not in _clients:
        import boto3
        from botocore.config import Config

        endpoint = env("C2D_S3_ENDPOINT_URL") or None
        s3_options: Any = {
            "addressing_style": env("C2D_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
        }
        config = Config(
            region_name=env("C2D_S3_REGION") or "us-east-1",
            connect_timeout=10,
            read_timeout=read_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            s3=s3_options,
            max_pool_connections=max(10, concurrency() * 2),
        )
        credentials: dict[str, Any] = {}
        if env(prefix + "ACCESS_KEY_ID"):
            credentials = {
                "aws_access_key_id": env(prefix + "ACCESS_KEY_ID"),
                "aws_secret_access_key": env(prefix + "SECRET_ACCESS_KEY"),
                "aws_session_token": env(prefix + "SESSION_TOKEN") or None,
            }
        _clients[prefix] = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, config=config, **credentials
        )
    return _clients[prefix]


def split(url: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key."""
    rest = url[len("s3://") :]
    bucket, _, key = rest.partition("/")
    return bucket, key


def error_text(exc: BaseException) -> str:
    """What went wrong, without the bucket, key or endpoint (they are the publisher's secret)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = str(error.get("Code") or "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return "the object does not exist"
        if code == "NoSuchBucket":
            return "the bucket does not exist"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return "access to the object was denied"
        if code in ("PreconditionFailed", "412"):
            return "the object changed while it was read"
        return f"S3 answered {code or 'an error'}"
    name = type(exc).__name__
    if name in ("EndpointConnectionError", "ConnectTimeoutError"):
        return "the S3 endpoint cannot be reached"
    if name in ("ReadTimeoutError",):
        return "the S3 endpoint stopped sending"
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return "no S3 credentials are configured"
    return f"S3 failed ({name})"
