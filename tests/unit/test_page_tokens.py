"""List page tokens: what the registry issues it reads back; anything else is INVALID_ARGUMENT."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest

from c2d_common.errors import InvalidArgument
from operator_svc.domain.registry import decode_page_token, encode_page_token

JOB_ID = "0123456789abcdef0123456789abcdef"
MOMENT = datetime(2026, 11, 26, 14, 23, 37, 123456, tzinfo=UTC)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _json_token(value: object) -> str:
    return _b64(json.dumps(value).encode())


REAL_TOKEN = encode_page_token(MOMENT, JOB_ID)


@pytest.mark.parametrize(
    "moment",
    [
        MOMENT,
        MOMENT.replace(microsecond=0),
        MOMENT.replace(tzinfo=None),  # SQLite hands back naive datetimes
        MOMENT.astimezone(timezone(timedelta(hours=5, minutes=30))),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    ids=["utc", "whole-seconds", "naive", "offset", "epoch", "max"],
)
def test_round_trip(moment: datetime) -> None:
    token = encode_page_token(moment, JOB_ID)
    # Tokens carry UTC: a naive time is taken as UTC (what we store), an offset becomes UTC.
    expected = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    decoded_moment, job_id = decode_page_token(token)
    assert (decoded_moment, job_id) == (expected, JOB_ID)
    assert decoded_moment.utcoffset() == timedelta(0)


def test_token_is_url_safe_and_unpadded() -> None:
    for job_id in (JOB_ID, "f" * 32, "0" * 32):
        token = encode_page_token(MOMENT, job_id)
        assert token
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_different_positions_give_different_tokens() -> None:
    tokens = {
        encode_page_token(MOMENT, JOB_ID),
        encode_page_token(MOMENT + timedelta(microseconds=1), JOB_ID),
        encode_page_token(MOMENT, "f" * 32),
    }
    assert len(tokens) == 3


REJECTED = {
    "empty": "",
    "garbage": "!!!!",
    "words": "not-a-page-token",
    "non-ascii": "tökén",
    "whitespace": "   ",
    "b64-junk-bytes": _b64(b"\x00\x01\x02junk\xff\xfe"),
    "b64-invalid-utf8-json": _b64(b'["\xff\xfe", "x"]'),
    "b64-plain-text": _b64(b"hello world"),
    "json-null": _json_token(None),
    "json-number": _json_token(42),
    "json-string": _json_token("2026-11-26T14:23:37"),
    "json-object-one-key": _json_token({"created": MOMENT.isoformat()}),
    "json-empty-list": _json_token([]),
    "json-one-item": _json_token([MOMENT.isoformat()]),
    "json-three-items": _json_token([MOMENT.isoformat(), JOB_ID, "extra"]),
    "not-a-date": _json_token(["yesterday", JOB_ID]),
    "date-is-number": _json_token([1764167017, JOB_ID]),
    "date-is-null": _json_token([None, JOB_ID]),
    "job-id-short": _json_token([MOMENT.isoformat(), JOB_ID[:31]]),
    "job-id-long": _json_token([MOMENT.isoformat(), JOB_ID + "0"]),
    "job-id-number": _json_token([MOMENT.isoformat(), 12345678901234567890123456789012]),
    "job-id-null": _json_token([MOMENT.isoformat(), None]),
    "job-id-list": _json_token([MOMENT.isoformat(), [JOB_ID]]),
    "real-token-half": REAL_TOKEN[: len(REAL_TOKEN) // 2],
    "real-token-minus-one": REAL_TOKEN[:-1],
    "real-token-minus-five": REAL_TOKEN[:-5],
    "real-token-first-char-dropped": REAL_TOKEN[1:],
    "real-token-doubled": REAL_TOKEN + REAL_TOKEN,
    "real-token-plus-junk": REAL_TOKEN + "A",
    "standard-b64-alphabet-junk": "+/+/+/+/",
    "one-megabyte": "A" * (1024 * 1024 + 1),
}


@pytest.mark.parametrize("token", REJECTED.values(), ids=REJECTED.keys())
def test_tokens_this_server_did_not_issue_are_rejected(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    message = str(caught.value)
    assert "page_token" in message
    # The message says what to do, and never echoes the (possibly huge) token back.
    assert "next_page_token" in message
    assert len(message) < 300


@pytest.mark.parametrize("length", range(1, len(REAL_TOKEN)))
def test_every_truncation_of_a_real_token_is_rejected(length: int) -> None:
    with pytest.raises(InvalidArgument):
        decode_page_token(REAL_TOKEN[:length])
