"""The publisher's HTTP method and headers for an http(s) input, checked before podtools get them.

Both backends pass them to podtools configure; a header that could smuggle a second request or
change what is fetched is refused, and no message ever shows a header's value (it is often a token).
"""

from __future__ import annotations

import re
from typing import Any

from c2d.common.v1 import job_pb2

MAX_HEADERS = 32
MAX_HEADER_VALUE = 8192
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
# Headers podtools set themselves or that would change what is fetched.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "range",
        "if-range",
        "accept-encoding",
        "te",
    }
)


def http_options(location: job_pb2.FileLocation, what: str) -> dict[str, Any]:
    """{"method": …, "headers": {…}} as far as the location has them; ValueError saying what is wrong."""
    options: dict[str, Any] = {}
    method = location.method.upper()
    if method not in ("", "GET", "POST"):
        raise ValueError(f"{what} asks for HTTP method {location.method[:10]!r}; GET or POST are supported")
    if method:
        options["method"] = method
    if len(location.headers) > MAX_HEADERS:
        raise ValueError(f"{what} has more than {MAX_HEADERS} HTTP headers")
    for name, value in location.headers.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{what} has an HTTP header podtools cannot send ({name[:40]!r})")
        if len(value) > MAX_HEADER_VALUE or any(c in value for c in "\r\n\0"):
            raise ValueError(f"{what} has a malformed value for HTTP header {name!r}")
    if location.headers:
        options["headers"] = dict(location.headers)
    return options
