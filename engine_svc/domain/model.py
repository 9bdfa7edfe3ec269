"""The engine's domain types: environments, jobs in progress, what each phase answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from c2d.common.v1 import job_pb2


@dataclass(frozen=True)
class Environment:
    id: str
    description: str
    cpus: float
    memory_bytes: int
    disk_bytes: int
    max_duration_seconds: int
    network_allowed: bool = False
    free: bool = True
    runtimes: tuple[str, ...] = ("python3",)
    max_processes: int = 256
    # GPUs the algorithm gets (the Kubernetes backend requests them as nvidia.com/gpu).
    gpus: int = 0

    @property
    def scratch_bytes(self) -> int:
        """The algorithm's /tmp, beside the job's disk: the smaller of disk and memory (a tmpfs
        on the local backend, an emptyDir on Kubernetes), at least 1 MiB."""
        return max(1024 * 1024, min(self.disk_bytes, self.memory_bytes))


@dataclass(frozen=True)
class JobContext:
    job_id: str
    owner: str
    spec: job_pb2.JobSpec
    environment: Environment

    @property
    def input_urls(self) -> list[str]:
        """Where every file of the job's datasets and algorithm comes from."""
        datasets = [f.url for dataset in self.spec.datasets for f in dataset.files]
        return datasets + [f.url for f in self.spec.algorithm.files]


@dataclass(frozen=True)
class StatusChange:
    status: int
    status_text: str = ""
    exit_code: int | None = None
    out_of_memory: bool = False
    results: tuple[PublishedFile, ...] = ()


@dataclass(frozen=True)
class LogOutput:
    stream: int  # c2d.common.v1.LogStream
    data: bytes


Progress = StatusChange | LogOutput


@dataclass(frozen=True)
class PublishedFile:
    name: str
    kind: int  # c2d.common.v1.ResultKind
    size: int
    sha256: str
    location: str


@dataclass(frozen=True)
class ConfigureOutcome:
    ok: bool
    # "data" or "algorithm": which input could not be provisioned.
    failed_input: str = ""
    reason: str = ""


@dataclass(frozen=True)
class AlgorithmOutcome:
    exit_code: int
    timed_out: bool = False
    out_of_memory: bool = False
    disk_quota_exceeded: bool = False


@dataclass(frozen=True)
class PublishOutcome:
    ok: bool
    reason: str = ""
    results: list[PublishedFile] = field(default_factory=list)


class BackendError(Exception):
    """A backend failure whose message is safe to show the job's owner (no paths, no locations)."""


OutputSink = Callable[[int, bytes], Awaitable[None]]


class Backend(Protocol):
    """Runs the phases of one job. Each call returns when its phase has ended; kill() ends the
    phase under way at once (the call then returns whatever it has)."""

    async def configure(self, job: JobContext, timeout: float) -> ConfigureOutcome: ...

    async def run_algorithm(self, job: JobContext, on_output: OutputSink) -> AlgorithmOutcome: ...

    async def publish(
        self, job: JobContext, timeout: float, include_outputs: bool = True
    ) -> PublishOutcome: ...

    async def kill(self, job_id: str) -> None: ...

    async def kill_unseen(self, job_id: str) -> None:
        """Ends whatever of a job this engine has not seen since it started still runs (a
        Kubernetes job's pods outlive the engine that made them); nothing for sandboxes, which
        die with their engine."""
        ...

    async def delete_job_files(self, job_id: str, *, keep_results: bool) -> None: ...
