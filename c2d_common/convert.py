"""Conversions to the shared protobuf messages that more than one service builds."""

from __future__ import annotations

from typing import Protocol

from c2d.common.v1 import job_pb2
from c2d_common.errors import InvalidArgument


class ResultLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def location(self) -> str: ...


def result_file_proto(result: ResultLike) -> job_pb2.ResultFile:
    return job_pb2.ResultFile(
        name=result.name,
        kind=result.kind,  # type: ignore[arg-type]
        size=result.size,
        sha256=result.sha256,
        location=result.location,
    )


def check_job_spec(spec: job_pb2.JobSpec) -> job_pb2.JobSpec:
    """What every service that takes a JobSpec requires of it."""
    if not spec.datasets:
        raise InvalidArgument("spec.datasets is empty: a job needs at least one dataset")
    if not spec.algorithm.files and not spec.algorithm.raw_code:
        raise InvalidArgument("spec.algorithm has neither files nor raw_code")
    return spec
