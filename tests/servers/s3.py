"""moto's S3 in server mode: a real HTTP S3 endpoint on 127.0.0.1 (port 0) for boto3 and podtools."""

from __future__ import annotations

import atexit
import contextlib
import re
import threading
from dataclasses import dataclass
from typing import Any

ACCESS_KEY = "c2d-test-key"
SECRET_KEY = "c2d-test-secret"
# The result store's own key (C2D_S3_RESULT_*): moto accepts any key, and the server records which
# key signed each request, so tests can tell which phase used which.
RESULT_ACCESS_KEY = "c2d-test-result-key"
RESULT_SECRET_KEY = "c2d-test-result-secret"
REGION = "us-east-1"
_CREDENTIAL = re.compile(r"Credential=([^/]+)/")


@dataclass(frozen=True)
class SignedRequest:
    method: str
    path: str
    access_key: str


class S3Server:
    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        self.requests: list[SignedRequest] = []
        self._requests_lock = threading.Lock()
        # Uploads whose path holds one of these are held until the server stops (or 60 s): a
        # store that stalls in the middle of a publish, after what came before was stored.
        self.stalled_uploads: set[str] = set()
        self._release = threading.Event()
        wsgi_server = self._server._server  # werkzeug's, serving moto's WSGI application
        assert wsgi_server is not None
        moto_app = wsgi_server.app

        def recording_app(environ: dict[str, Any], start_response: Any) -> Any:
            found = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
            with self._requests_lock:
                self.requests.append(
                    SignedRequest(
                        environ.get("REQUEST_METHOD", ""),
                        environ.get("PATH_INFO", ""),
                        found.group(1) if found else "",
                    )
                )
            path = environ.get("PATH_INFO", "")
            if environ.get("REQUEST_METHOD") in ("PUT", "POST") and any(
                p in path for p in self.stalled_uploads
            ):
                self._release.wait(60)
            return moto_app(environ, start_response)

        wsgi_server.app = recording_app

    def mark(self) -> int:
        """A point in the request record: keys_used(..., since=mark) looks only after it."""
        with self._requests_lock:
            return len(self.requests)

    def keys_used(
        self,
        bucket: str,
        methods: tuple[str, ...] = ("GET", "PUT", "POST", "DELETE", "HEAD"),
        since: int = 0,
    ) -> set[str]:
        """The access keys that signed requests to a bucket (path-style addressing)."""
        with self._requests_lock:
            return {
                r.access_key
                for r in self.requests[since:]
                if r.method in methods and (r.path == f"/{bucket}" or r.path.startswith(f"/{bucket}/"))
            }

    def env(self, **more: str) -> dict[str, str]:
        """The C2D_* variables that point the suite at this server."""
        return {
            "C2D_S3_ENDPOINT_URL": self.endpoint_url,
            "C2D_S3_REGION": REGION,
            "C2D_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "C2D_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "C2D_S3_RESULT_ACCESS_KEY_ID": RESULT_ACCESS_KEY,
            "C2D_S3_RESULT_SECRET_ACCESS_KEY": RESULT_SECRET_KEY,
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
        self._release.set()
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
