"""Fetching one input file to disk, streamed, with its checksum and size checked on the way."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from urllib.parse import unquote, urlparse

CHUNK = 1024 * 1024
HTTP_TIMEOUT_SECONDS = 60


class FetchError(Exception):
    pass


def _open_http(url: str, public_only: bool):
    import urllib.request  # here, not at the top: it costs ~18 ms of imports per sandbox

    from podtools.hosts import check_public

    class CheckedRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if public_only:
                check_public(newurl)  # a public URL must not bounce the fetch to a private host
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    if public_only:
        check_public(url)
    opener = urllib.request.build_opener(CheckedRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": "c2d-podtools/0.1"})
    return opener.open(request, timeout=HTTP_TIMEOUT_SECONDS)


def fetch(
    url: str, destination: str, expected_sha256: str = "", expected_size: int = 0, public_only: bool = True
) -> tuple[int, str]:
    """Writes the content at url to destination; answers (size, sha256). With public_only, http(s)
    inputs come only from public addresses (see hosts.py)."""
    parsed = urlparse(url)
    digest = hashlib.sha256()
    size = 0
    try:
        if parsed.scheme == "file":
            source = open(unquote(parsed.path), "rb")  # noqa: SIM115 (closed below)
        elif parsed.scheme in ("http", "https"):
            source = _open_http(url, public_only)
        else:
            raise FetchError(f"unsupported URL scheme {parsed.scheme!r}")
        with source, open(destination + ".part", "wb") as sink:
            while True:
                chunk = source.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if expected_size and size > expected_size:
                    raise FetchError(f"more than the declared {expected_size} bytes")
                digest.update(chunk)
                sink.write(chunk)
    except FetchError:
        _discard(destination + ".part")
        raise
    except Exception as exc:  # OSError, ValueError, http.client's own errors, …
        _discard(destination + ".part")
        # Messages reach the consumer; the location is the publisher's secret.
        if exc.__class__.__name__ == "HostRefused":
            raise FetchError(str(exc)) from exc
        raise FetchError(f"{type(exc).__name__}: {exc}".replace(url, "<location>")) from exc
    if expected_size and size != expected_size:
        _discard(destination + ".part")
        raise FetchError(f"{size} bytes where {expected_size} were declared")
    actual = digest.hexdigest()
    if expected_sha256 and actual != expected_sha256.lower():
        _discard(destination + ".part")
        # The actual digest is not shown: it is a fingerprint of the publisher's private data.
        raise FetchError("content does not match the declared sha256")
    shutil.move(destination + ".part", destination)
    return size, actual


def _discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
