"""Job ids: 32 lowercase hex digits from uuid4, unguessable."""

from __future__ import annotations

import re
import uuid

from c2d_common.errors import InvalidArgument

# fullmatch everywhere: "$" in re.match also accepts a trailing newline.
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
MAX_REQUEST_ID = 128


def new_job_id() -> str:
    return uuid.uuid4().hex


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        shown = job_id if len(job_id) <= 80 else job_id[:80] + "…"
        raise InvalidArgument(f"job_id {shown!r} is malformed: a job id is 32 lowercase hex digits")
    return job_id


def check_address(address: str, field: str = "consumer_address") -> str:
    """An Ethereum address, answered in lowercase so that owners compare equal."""
    if not _ADDRESS.fullmatch(address):
        shown = address if len(address) <= 80 else address[:80] + "…"
        raise InvalidArgument(f"{field} {shown!r} is not an Ethereum address (0x followed by 40 hex digits)")
    return address.lower()


def check_request_id(request_id: str) -> str:
    """An idempotency key: empty (none), or 1 to 128 printable ASCII characters without spaces."""
    if request_id and not _REQUEST_ID.fullmatch(request_id):
        raise InvalidArgument(
            f"request_id must be 1 to {MAX_REQUEST_ID} printable ASCII characters without spaces "
            "(a UUID is a good choice)"
        )
    return request_id
