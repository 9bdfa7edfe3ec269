"""moto's S3 in server mode: a real HTTP S3 endpoint on 127.0.0.1 (port 0) for boto3 and podtools."""

from __future__ import annotations

import atexit
import contextlib
import threading
from typing import Any

ACCESS_KEY = "c2d-test-key"
SECRET_KEY = "c2d-test-secret"
REGION = "us-east-1"


class S3Server:
    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def env(self, **more: str) -> dict[str, str]:
        """The C2D_* variables that point the suite at this server."""
        return {
            "C2D_S3_ENDPOINT_URL": self.endpoint_url,
            "C2D_S3_REGION": REGION,
            "C2D_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "C2D_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            **more,
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def bucket(self, name: str) -> str:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def stop(self) -> None:
        self._server.stop()


_shared: S3Server | None = None
_lock = threading.Lock()


def shared_s3_server() -> S3Server:
    """One server for the whole test process (moto keeps buckets apart; tests use their own)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = S3Server()
            atexit.register(_shared.stop)
        return _shared
