from c2d.common.v1 import job_pb2 as _job_pb2
from c2d.common.v1 import job_status_pb2 as _job_status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunJobRequest(_message.Message):
    __slots__ = ("job_id", "owner", "spec", "run_id", "after_progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    owner: str
    spec: _job_pb2.JobSpec
    run_id: str
    after_progress: int
    def __init__(self, job_id: _Optional[str] = ..., owner: _Optional[str] = ..., spec: _Optional[_Union[_job_pb2.JobSpec, _Mapping]] = ..., run_id: _Optional[str] = ..., after_progress: _Optional[int] = ...) -> None: ...

class StatusUpdate(_message.Message):
    __slots__ = ("status", "status_text", "exit_code", "out_of_memory", "results")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_TEXT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_MEMORY_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    status: _job_status_pb2.JobStatus
    status_text: str
    exit_code: int
    out_of_memory: bool
    results: _containers.RepeatedCompositeFieldContainer[_job_pb2.ResultFile]
    def __init__(self, status: _Optional[_Union[_job_status_pb2.JobStatus, str]] = ..., status_text: _Optional[str] = ..., exit_code: _Optional[int] = ..., out_of_memory: _Optional[bool] = ..., results: _Optional[_Iterable[_Union[_job_pb2.ResultFile, _Mapping]]] = ...) -> None: ...

class RunJobResponse(_message.Message):
    __slots__ = ("status", "log", "run_id", "progress_index")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_INDEX_FIELD_NUMBER: _ClassVar[int]
    status: StatusUpdate
    log: _job_pb2.LogChunk
    run_id: str
    progress_index: int
    def __init__(self, status: _Optional[_Union[StatusUpdate, _Mapping]] = ..., log: _Optional[_Union[_job_pb2.LogChunk, _Mapping]] = ..., run_id: _Optional[str] = ..., progress_index: _Optional[int] = ...) -> None: ...

class StopJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class StopJobResponse(_message.Message):
    __slots__ = ("was_running", "already_ended")
    WAS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    ALREADY_ENDED_FIELD_NUMBER: _ClassVar[int]
    was_running: bool
    already_ended: bool
    def __init__(self, was_running: _Optional[bool] = ..., already_ended: _Optional[bool] = ...) -> None: ...

class GetEnvironmentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEnvironmentsResponse(_message.Message):
    __slots__ = ("environments",)
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    environments: _containers.RepeatedCompositeFieldContainer[_job_pb2.ComputeEnvironment]
    def __init__(self, environments: _Optional[_Iterable[_Union[_job_pb2.ComputeEnvironment, _Mapping]]] = ...) -> None: ...
