"""The job status table (Ocean's C2D numbering), as the domain code sees it.

Mirrors c2d.common.v1.JobStatus number for number; a unit test keeps the two equal.
"""

from __future__ import annotations

from enum import IntEnum


class JobStatus(IntEnum):
    QUEUED = 1
    STARTED = 10
    CONFIGURING = 20
    PROVISIONING_SUCCEEDED = 30
    DATA_PROVISIONING_FAILED = 31
    ALGORITHM_PROVISIONING_FAILED = 32
    RUNNING = 40
    ALGORITHM_FAILED = 41
    ALGORITHM_TIMED_OUT = 42
    OUT_OF_MEMORY = 43
    DISK_QUOTA_EXCEEDED = 44
    FILTERING_RESULTS = 50
    PUBLISHING = 60
    RESULTS_UPLOAD_FAILED = 61
    FINISHED = 70
    STOPPED = 80
    SYSTEM_ERROR = 90

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
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
)

DEFAULT_STATUS_TEXT = {
    JobStatus.QUEUED: "Queued",
    JobStatus.STARTED: "Job started",
    JobStatus.CONFIGURING: "Configuring volumes",
    JobStatus.PROVISIONING_SUCCEEDED: "Provisioning success",
    JobStatus.DATA_PROVISIONING_FAILED: "Data provisioning failed",
    JobStatus.ALGORITHM_PROVISIONING_FAILED: "Algorithm provisioning failed",
    JobStatus.RUNNING: "Running algorithm",
    JobStatus.ALGORITHM_FAILED: "Algorithm failed",
    JobStatus.ALGORITHM_TIMED_OUT: "Algorithm timed out",
    JobStatus.OUT_OF_MEMORY: "Algorithm ran out of memory",
    JobStatus.DISK_QUOTA_EXCEEDED: "Disk quota exceeded",
    JobStatus.FILTERING_RESULTS: "Filtering results",
    JobStatus.PUBLISHING: "Publishing results",
    JobStatus.RESULTS_UPLOAD_FAILED: "Results upload failed",
    JobStatus.FINISHED: "Job finished",
    JobStatus.STOPPED: "Job stopped",
    JobStatus.SYSTEM_ERROR: "System error",
}
