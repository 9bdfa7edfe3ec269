"""Job ids and Ethereum addresses: the two identifiers every request carries."""

from __future__ import annotations

import grpc
import pytest

from c2d_common.errors import InvalidArgument
from c2d_common.ids import check_address, check_job_id, new_job_id

VALID_JOB_ID = "0123456789abcdef0123456789abcdef"
VALID_ADDRESS = "0x" + "c0" * 20


def test_new_job_ids_are_32_lowercase_hex_digits_and_valid() -> None:
    for _ in range(100):
        job_id = new_job_id()
        assert len(job_id) == 32
        assert set(job_id) <= set("0123456789abcdef")
        assert check_job_id(job_id) == job_id


def test_new_job_ids_do_not_repeat() -> None:
    ids = {new_job_id() for _ in range(10_000)}
    assert len(ids) == 10_000


@pytest.mark.parametrize("job_id", [VALID_JOB_ID, "0" * 32, "f" * 32])
def test_well_formed_job_ids_are_accepted(job_id: str) -> None:
    assert check_job_id(job_id) == job_id


MALFORMED_JOB_IDS = {
    "empty": "",
    "too-short": "abc123",
    "31-digits": "a" * 31,
    "33-digits": "a" * 33,
    "uppercase": "A" * 32,
    "mixed-case": "aB" * 16,
    "uuid-with-dashes": "01234567-89ab-cdef-0123-456789abcdef",
    "non-hex": "g" * 32,
    "10-kilobytes": "a" * 10_240,
    "unicode": "ä" * 32,
    "fullwidth-digits": "\uff10" * 32,
    "dotdot": "../x",
    "dotdot-32-chars": "../" + "a" * 29,
    "slash": "a" * 16 + "/" + "a" * 15,
    "nul": "a" * 31 + "\x00",
    "leading-space": " " + "a" * 32,
    "leading-newline": "\n" + "a" * 32,
}


@pytest.mark.parametrize("job_id", MALFORMED_JOB_IDS.values(), ids=MALFORMED_JOB_IDS.keys())
def test_malformed_job_ids_are_invalid_argument(job_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_job_id(job_id)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "job_id" in str(caught.value)
    assert len(str(caught.value)) < 300  # a 10 KB id is not echoed back whole


def test_job_id_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        check_job_id(VALID_JOB_ID + "\n")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (VALID_ADDRESS, VALID_ADDRESS),
        ("0x" + "AB" * 20, "0x" + "ab" * 20),
        ("0x52908400098527886E0F7030069857D2E4169EE7", "0x52908400098527886e0f7030069857d2e4169ee7"),
        ("0x" + "0" * 40, "0x" + "0" * 40),
    ],
)
def test_addresses_are_accepted_and_lowercased(address: str, expected: str) -> None:
    assert check_address(address) == expected


MALFORMED_ADDRESSES = {
    "empty": "",
    "no-prefix": "c0" * 20,
    "0X-prefix": "0X" + "c0" * 20,
    "short": "0x1234",
    "39-digits": "0x" + "c" * 39,
    "41-digits": "0x" + "c" * 41,
    "non-hex": "0x" + "zz" * 20,
    "10-kilobytes": "0x" + "a" * 10_240,
    "unicode": "0x" + "ä" * 40,
    "ens-name": "vitalik.eth",
    "leading-space": " 0x" + "c0" * 20,
    "trailing-space": "0x" + "c0" * 20 + " ",
    "nul": "0x" + "c0" * 20 + "\x00",
}


@pytest.mark.parametrize("address", MALFORMED_ADDRESSES.values(), ids=MALFORMED_ADDRESSES.keys())
def test_malformed_addresses_are_invalid_argument(address: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_address(address)
    assert "consumer_address" in str(caught.value)
    assert len(str(caught.value)) < 300


def test_the_field_name_is_in_the_message() -> None:
    with pytest.raises(InvalidArgument, match="publisher_address"):
        check_address("nope", "publisher_address")


def test_address_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        check_address(VALID_ADDRESS + "\n")
