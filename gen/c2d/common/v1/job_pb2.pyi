import datetime

from c2d.common.v1 import job_status_pb2 as _job_status_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResultKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_KIND_UNSPECIFIED: _ClassVar[ResultKind]
    RESULT_KIND_OUTPUT: _ClassVar[ResultKind]
    RESULT_KIND_LOG: _ClassVar[ResultKind]

class LogStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_STREAM_UNSPECIFIED: _ClassVar[LogStream]
    LOG_STREAM_STDOUT: _ClassVar[LogStream]
    LOG_STREAM_STDERR: _ClassVar[LogStream]
    LOG_STREAM_SYSTEM: _ClassVar[LogStream]
RESULT_KIND_UNSPECIFIED: ResultKind
RESULT_KIND_OUTPUT: ResultKind
RESULT_KIND_LOG: ResultKind
LOG_STREAM_UNSPECIFIED: LogStream
LOG_STREAM_STDOUT: LogStream
LOG_STREAM_STDERR: LogStream
LOG_STREAM_SYSTEM: LogStream

class FileLocation(_message.Message):
    __slots__ = ("url", "sha256", "size", "headers", "method")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    URL_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    url: str
    sha256: str
    size: int
    headers: _containers.ScalarMap[str, str]
    method: str
    def __init__(self, url: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ..., method: _Optional[str] = ...) -> None: ...

class DatasetInput(_message.Message):
    __slots__ = ("did", "files", "ddo")
    DID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DDO_FIELD_NUMBER: _ClassVar[int]
    did: str
    files: _containers.RepeatedCompositeFieldContainer[FileLocation]
    ddo: _struct_pb2.Struct
    def __init__(self, did: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileLocation, _Mapping]]] = ..., ddo: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AlgorithmInput(_message.Message):
    __slots__ = ("did", "files", "raw_code", "entrypoint", "runtime")
    DID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    RAW_CODE_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    did: str
    files: _containers.RepeatedCompositeFieldContainer[FileLocation]
    raw_code: bytes
    entrypoint: _containers.RepeatedScalarFieldContainer[str]
    runtime: str
    def __init__(self, did: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileLocation, _Mapping]]] = ..., raw_code: _Optional[bytes] = ..., entrypoint: _Optional[_Iterable[str]] = ..., runtime: _Optional[str] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("datasets", "algorithm", "environment_id", "algorithm_parameters")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInput]
    algorithm: AlgorithmInput
    environment_id: str
    algorithm_parameters: _struct_pb2.Struct
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInput, _Mapping]]] = ..., algorithm: _Optional[_Union[AlgorithmInput, _Mapping]] = ..., environment_id: _Optional[str] = ..., algorithm_parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ResultFile(_message.Message):
    __slots__ = ("name", "kind", "size", "sha256", "location")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ResultKind
    size: int
    sha256: str
    location: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ResultKind, str]] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., location: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "owner", "status", "status_text", "dataset_dids", "algorithm_did", "environment_id", "created_at", "updated_at", "finished_at", "exit_code", "out_of_memory", "results", "sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_TEXT_FIELD_NUMBER: _ClassVar[int]
    DATASET_DIDS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_DID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_MEMORY_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    owner: str
    status: _job_status_pb2.JobStatus
    status_text: str
    dataset_dids: _containers.RepeatedScalarFieldContainer[str]
    algorithm_did: str
    environment_id: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    exit_code: int
    out_of_memory: bool
    results: _containers.RepeatedCompositeFieldContainer[ResultFile]
    sequence: int
    def __init__(self, job_id: _Optional[str] = ..., owner: _Optional[str] = ..., status: _Optional[_Union[_job_status_pb2.JobStatus, str]] = ..., status_text: _Optional[str] = ..., dataset_dids: _Optional[_Iterable[str]] = ..., algorithm_did: _Optional[str] = ..., environment_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_code: _Optional[int] = ..., out_of_memory: _Optional[bool] = ..., results: _Optional[_Iterable[_Union[ResultFile, _Mapping]]] = ..., sequence: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "status", "status_text", "time", "exit_code", "out_of_memory")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_TEXT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_MEMORY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    status: _job_status_pb2.JobStatus
    status_text: str
    time: _timestamp_pb2.Timestamp
    exit_code: int
    out_of_memory: bool
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., status: _Optional[_Union[_job_status_pb2.JobStatus, str]] = ..., status_text: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_code: _Optional[int] = ..., out_of_memory: _Optional[bool] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("sequence", "stream", "data", "time")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    stream: LogStream
    data: bytes
    time: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., stream: _Optional[_Union[LogStream, str]] = ..., data: _Optional[bytes] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ComputeEnvironment(_message.Message):
    __slots__ = ("id", "description", "cpus", "memory_bytes", "disk_bytes", "max_duration_seconds", "network_allowed", "free", "runtimes", "gpus")
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    description: str
    cpus: float
    memory_bytes: int
    disk_bytes: int
    max_duration_seconds: int
    network_allowed: bool
    free: bool
    runtimes: _containers.RepeatedScalarFieldContainer[str]
    gpus: int
    def __init__(self, id: _Optional[str] = ..., description: _Optional[str] = ..., cpus: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., max_duration_seconds: _Optional[int] = ..., network_allowed: _Optional[bool] = ..., free: _Optional[bool] = ..., runtimes: _Optional[_Iterable[str]] = ..., gpus: _Optional[int] = ...) -> None: ...
