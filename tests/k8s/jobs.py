"""Driving jobs through the engine's runner on the Kubernetes backend, and serving their inputs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from c2d.common.v1 import job_pb2
from c2d_common.ids import new_job_id
from c2d_common.status import JobStatus
from engine_svc.domain.model import Environment, LogOutput, StatusChange
from engine_svc.domain.runner import JobRunner, RunnerSettings
from engine_svc.domain.runs import JobRun, RunRegistry
from engine_svc.infra.kubernetes import KubernetesBackend

OWNER = "0x" + "c0" * 20
DATASET_DID = "did:op:" + "d" * 64
MiB = 1024 * 1024

SMALL = Environment(
    id="k8s-small",
    description="1 CPU, 256 MiB, 64 MiB disk, 30 s",
    cpus=1.0,
    memory_bytes=256 * MiB,
    disk_bytes=64 * MiB,
    max_duration_seconds=30,
)


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """A static HTTP server for the folder on 127.0.0.1 (a dataset's host); yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def location(url: str, data: bytes | None = None) -> job_pb2.FileLocation:
    if data is None:
        return job_pb2.FileLocation(url=url)
    return job_pb2.FileLocation(url=url, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def job_spec(
    dataset_url: str,
    algorithm: str,
    *,
    environment: str = SMALL.id,
    data: bytes | None = None,
    runtime: str = "",
    entrypoint: tuple[str, ...] = (),
) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        datasets=[job_pb2.DatasetInput(did=DATASET_DID, files=[location(dataset_url, data)])],
        algorithm=job_pb2.AlgorithmInput(
            raw_code=algorithm.encode(), runtime=runtime, entrypoint=list(entrypoint)
        ),
        environment_id=environment,
    )


def make_runner(
    backend: KubernetesBackend, environments: list[Environment] | None = None, **settings: float
) -> JobRunner:
    return JobRunner(
        backend,
        environments or [SMALL],
        RunnerSettings(
            max_concurrent_jobs=4,
            configure_timeout_seconds=settings.get("configure_timeout_seconds", 30),
            publish_timeout_seconds=settings.get("publish_timeout_seconds", 30),
        ),
        RunRegistry(),
    )


@dataclass
class Followed:
    statuses: list[StatusChange] = field(default_factory=list)
    output: bytearray = field(default_factory=bytearray)

    @property
    def final(self) -> StatusChange:
        return self.statuses[-1]

    @property
    def status(self) -> JobStatus:
        return JobStatus(self.final.status)

    @property
    def history(self) -> list[JobStatus]:
        return [JobStatus(s.status) for s in self.statuses]


async def follow(run: JobRun, timeout: float = 60) -> Followed:
    seen = Followed()
    async with asyncio.timeout(timeout):
        async for _, progress in run.follow():
            if isinstance(progress, LogOutput):
                seen.output += progress.data
            else:
                seen.statuses.append(progress)
    return seen


def start(runner: JobRunner, spec: job_pb2.JobSpec, job_id: str | None = None) -> JobRun:
    return runner.attach_or_start(job_id or new_job_id(), OWNER, spec)


async def run_job(runner: JobRunner, spec: job_pb2.JobSpec, timeout: float = 60) -> tuple[str, Followed]:
    job_id = new_job_id()
    return job_id, await follow(start(runner, spec, job_id), timeout)
