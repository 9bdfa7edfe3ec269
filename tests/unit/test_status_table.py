"""The domain's status table and the proto enum are one table: same names, same numbers."""

from __future__ import annotations

import pytest

from c2d.common.v1 import job_status_pb2
from c2d_common.status import DEFAULT_STATUS_TEXT, TERMINAL_STATUSES, JobStatus

PROTO_PREFIX = "JOB_STATUS_"
PROTO_MEMBERS = {
    name.removeprefix(PROTO_PREFIX): number
    for name, number in job_status_pb2.JobStatus.items()
    if name != "JOB_STATUS_UNSPECIFIED"
}

# Ocean Protocol's C2D codes, which the architecture keeps one to one.
OCEAN_CODES = {
    "QUEUED": 1,
    "STARTED": 10,
    "CONFIGURING": 20,
    "PROVISIONING_SUCCEEDED": 30,
    "DATA_PROVISIONING_FAILED": 31,
    "ALGORITHM_PROVISIONING_FAILED": 32,
    "RUNNING": 40,
    "ALGORITHM_FAILED": 41,
    "FILTERING_RESULTS": 50,
    "PUBLISHING": 60,
    "RESULTS_UPLOAD_FAILED": 61,
    "FINISHED": 70,
}


def test_every_domain_status_is_in_the_proto_enum_with_the_same_number() -> None:
    assert {member.name: member.value for member in JobStatus} == PROTO_MEMBERS


@pytest.mark.parametrize("name", sorted(PROTO_MEMBERS))
def test_proto_value_maps_to_the_domain_member_of_the_same_name(name: str) -> None:
    number = job_status_pb2.JobStatus.Value(PROTO_PREFIX + name)
    assert JobStatus(number).name == name
    assert job_status_pb2.JobStatus.Name(int(JobStatus[name])) == PROTO_PREFIX + name


def test_unspecified_is_zero_and_not_a_domain_status() -> None:
    assert job_status_pb2.JOB_STATUS_UNSPECIFIED == 0
    with pytest.raises(ValueError):
        JobStatus(0)


@pytest.mark.parametrize(("name", "number"), sorted(OCEAN_CODES.items()))
def test_ocean_numbering_is_kept(name: str, number: int) -> None:
    assert JobStatus[name] == number


def test_every_status_has_a_default_text() -> None:
    assert set(DEFAULT_STATUS_TEXT) == set(JobStatus)
    assert all(text for text in DEFAULT_STATUS_TEXT.values())


def test_terminal_statuses_are_the_failures_and_the_ends() -> None:
    expected = {
        JobStatus.DATA_PROVISIONING_FAILED,
        JobStatus.ALGORITHM_PROVISIONING_FAILED,
        JobStatus.ALGORITHM_FAILED,
        JobStatus.ALGORITHM_TIMED_OUT,
        JobStatus.OUT_OF_MEMORY,
        JobStatus.DISK_QUOTA_EXCEEDED,
        JobStatus.RESULTS_UPLOAD_FAILED,
        JobStatus.FINISHED,
        JobStatus.STOPPED,
        JobStatus.SYSTEM_ERROR,
    }
    assert set(TERMINAL_STATUSES) == expected
    for status in JobStatus:
        assert status.is_terminal == (status in expected)
