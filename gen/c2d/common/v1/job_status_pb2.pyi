from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_QUEUED: _ClassVar[JobStatus]
    JOB_STATUS_STARTED: _ClassVar[JobStatus]
    JOB_STATUS_CONFIGURING: _ClassVar[JobStatus]
    JOB_STATUS_PROVISIONING_SUCCEEDED: _ClassVar[JobStatus]
    JOB_STATUS_DATA_PROVISIONING_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_ALGORITHM_PROVISIONING_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_RUNNING: _ClassVar[JobStatus]
    JOB_STATUS_ALGORITHM_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_ALGORITHM_TIMED_OUT: _ClassVar[JobStatus]
    JOB_STATUS_OUT_OF_MEMORY: _ClassVar[JobStatus]
    JOB_STATUS_DISK_QUOTA_EXCEEDED: _ClassVar[JobStatus]
    JOB_STATUS_FILTERING_RESULTS: _ClassVar[JobStatus]
    JOB_STATUS_PUBLISHING: _ClassVar[JobStatus]
    JOB_STATUS_RESULTS_UPLOAD_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_FINISHED: _ClassVar[JobStatus]
    JOB_STATUS_STOPPED: _ClassVar[JobStatus]
    JOB_STATUS_SYSTEM_ERROR: _ClassVar[JobStatus]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_QUEUED: JobStatus
JOB_STATUS_STARTED: JobStatus
JOB_STATUS_CONFIGURING: JobStatus
JOB_STATUS_PROVISIONING_SUCCEEDED: JobStatus
JOB_STATUS_DATA_PROVISIONING_FAILED: JobStatus
JOB_STATUS_ALGORITHM_PROVISIONING_FAILED: JobStatus
JOB_STATUS_RUNNING: JobStatus
JOB_STATUS_ALGORITHM_FAILED: JobStatus
JOB_STATUS_ALGORITHM_TIMED_OUT: JobStatus
JOB_STATUS_OUT_OF_MEMORY: JobStatus
JOB_STATUS_DISK_QUOTA_EXCEEDED: JobStatus
JOB_STATUS_FILTERING_RESULTS: JobStatus
JOB_STATUS_PUBLISHING: JobStatus
JOB_STATUS_RESULTS_UPLOAD_FAILED: JobStatus
JOB_STATUS_FINISHED: JobStatus
JOB_STATUS_STOPPED: JobStatus
JOB_STATUS_SYSTEM_ERROR: JobStatus
