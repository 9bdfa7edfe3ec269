"""Orchestrates a job's phases on a backend: configure, run the algorithm, publish, delete.

Each phase's outcome maps to one status of the table in c2d_common.status. Stop works in every
phase: the backend kills what runs, the job's files are deleted, and the job ends as STOPPED.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Any

import structlog

from c2d.common.v1 import job_pb2
from c2d_common.status import DEFAULT_STATUS_TEXT, JobStatus
from c2d_common.tracing import tracer
from engine_svc.domain.model import (
    AlgorithmOutcome,
    Backend,
    BackendError,
    Environment,
    JobContext,
    LogOutput,
    PublishOutcome,
    StatusChange,
)
from engine_svc.domain.runs import JobRun, RunRegistry
from engine_svc.metrics import PHASE_SECONDS, RUNNING_JOBS, WAITING_JOBS

log = structlog.get_logger(__name__)

SYSTEM = job_pb2.LOG_STREAM_SYSTEM


@dataclass(frozen=True)
class RunnerSettings:
    max_concurrent_jobs: int = 2
    configure_timeout_seconds: float = 600.0
    publish_timeout_seconds: float = 600.0
    # Live log streamed per job; the whole log is always published with the results. Bounds what
    # a chatty algorithm can make this engine and the operator hold.
    live_log_limit_bytes: int = 8 * 1024 * 1024


class UnknownEnvironment(Exception):
    pass


class EngineShuttingDown(Exception):
    pass


class StopOutcome(Enum):
    STOPPED = "stopped"
    # The job had ended before the stop arrived; its terminal status stands.
    ALREADY_ENDED = "already ended"
    # This engine never saw the job; it will refuse to start it.
    NOT_SEEN = "not seen"


class JobRunner:
    def __init__(
        self, backend: Backend, environments: list[Environment], settings: RunnerSettings, runs: RunRegistry
    ):
        self.backend = backend
        self.environments = {e.id: e for e in environments}
        self.default_environment = environments[0]
        self.settings = settings
        self.runs = runs
        self._slots = asyncio.Semaphore(settings.max_concurrent_jobs)
        # Jobs stopped before this engine ever saw them: a later RunJob must not start them.
        self._stopped_unseen: OrderedDict[str, None] = OrderedDict()
        self._shutting_down = False

    def environment(self, environment_id: str) -> Environment:
        if not environment_id:
            return self.default_environment
        try:
            return self.environments[environment_id]
        except KeyError:
            raise UnknownEnvironment(environment_id) from None

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def attach_or_start(self, job_id: str, owner: str, spec: job_pb2.JobSpec) -> JobRun:
        if self._shutting_down:
            raise EngineShuttingDown("this engine is shutting down; the job goes to the next engine")
        run = self.runs.get(job_id)
        if run is not None:
            return run
        run = JobRun(job_id)
        self.runs.add(run)
        if job_id in self._stopped_unseen:
            run.emit(StatusChange(int(JobStatus.STOPPED), "Stopped before it started"))
            return run
        try:
            environment = self.environment(spec.environment_id)
        except UnknownEnvironment:
            run.emit(
                StatusChange(
                    int(JobStatus.SYSTEM_ERROR),
                    f"this engine offers no environment {spec.environment_id!r}",
                )
            )
            return run
        context = JobContext(job_id=job_id, owner=owner, spec=spec, environment=environment)
        run.task = asyncio.create_task(self._run(run, context), name=f"job-{job_id}")
        return run

    async def stop(self, job_id: str) -> StopOutcome:
        run = self.runs.get(job_id)
        if run is None:
            self._stopped_unseen[job_id] = None
            while len(self._stopped_unseen) > 10_000:
                self._stopped_unseen.popitem(last=False)
            # A job an earlier engine ran may still have pods running: they end now, not when the
            # sweep finds the job unclaimed.
            await self.backend.kill_unseen(job_id)
            return StopOutcome.NOT_SEEN
        if run.finished:
            return StopOutcome.ALREADY_ENDED
        run.stop_requested.set()
        await self.backend.kill(job_id)
        if run.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(run.task)
        return StopOutcome.STOPPED

    async def shutdown(self) -> None:
        """Kills every job still running here and deletes its files, without ending it: the
        operator dispatches it again, to this engine once it is back or to another one."""
        self._shutting_down = True  # attach_or_start refuses from now on
        while active := [r for r in self.runs.active() if r.task is not None and not r.task.done()]:
            for run in active:
                assert run.task is not None
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run.task

    async def _run(self, run: JobRun, job: JobContext) -> None:
        structlog.contextvars.bind_contextvars(job_id=job.job_id)
        try:
            await self._phases(run, job)
        except asyncio.CancelledError:
            await self.backend.kill(job.job_id)
            await self.backend.delete_job_files(job.job_id, keep_results=False)
            log.info("job interrupted by the engine's shutdown; the operator will dispatch it again")
            self.runs.forget(job.job_id)
            run.close()
            raise
        except Exception as exc:
            log.exception("job failed inside the engine")
            text = str(exc) if isinstance(exc, BackendError) else "the engine failed; its log has the details"
            await self._end(run, job, StatusChange(int(JobStatus.SYSTEM_ERROR), text))

    def _status(self, run: JobRun, status: JobStatus, text: str = "") -> None:
        log.info("phase", status=status.name, text=text)
        run.emit(StatusChange(int(status), text or DEFAULT_STATUS_TEXT[status]))

    def _system_log(self, run: JobRun, line: str) -> None:
        run.emit(LogOutput(SYSTEM, f"[c2d] {line}\n".encode()))

    async def _wait_for_slot(self, run: JobRun) -> bool:
        """True with a slot held; False when the job was stopped while it waited."""
        acquire = asyncio.ensure_future(self._slots.acquire())
        stopped = asyncio.ensure_future(run.stop_requested.wait())
        try:
            await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (engine shutdown): leave no slot taken, no task pending
            self._abandon_slot(acquire)
            raise
        finally:
            stopped.cancel()
        if run.stop_requested.is_set():
            self._abandon_slot(acquire)
            return False
        return True

    def _abandon_slot(self, acquire: asyncio.Future[Any]) -> None:
        if not acquire.cancel() and not acquire.cancelled():
            self._slots.release()  # it had already got the slot

    async def _phases(self, run: JobRun, job: JobContext) -> None:
        with WAITING_JOBS.track_inprogress():
            got_slot = await self._wait_for_slot(run)
        if not got_slot:
            await self._end(run, job, StatusChange(int(JobStatus.STOPPED), "Stopped while queued"))
            return
        try:
            with RUNNING_JOBS.track_inprogress():
                await self._phases_with_slot(run, job)
        finally:
            self._slots.release()

    async def _phases_with_slot(self, run: JobRun, job: JobContext) -> None:
        env = job.environment
        self._status(run, JobStatus.STARTED, f"Job started in environment {env.id}")
        self._status(run, JobStatus.CONFIGURING)
        with (
            PHASE_SECONDS.labels("configure").time(),
            tracer.start_as_current_span("configure", attributes={"c2d.job_id": job.job_id}),
        ):
            configured = await self.backend.configure(job, self.settings.configure_timeout_seconds)
        if run.stop_requested.is_set():
            return await self._stopped(run, job, "configuring")
        if not configured.ok:
            status = (
                JobStatus.ALGORITHM_PROVISIONING_FAILED
                if configured.failed_input == "algorithm"
                else JobStatus.DATA_PROVISIONING_FAILED
            )
            self._system_log(run, f"provisioning failed: {configured.reason}")
            return await self._end(run, job, StatusChange(int(status), configured.reason))
        self._status(run, JobStatus.PROVISIONING_SUCCEEDED)

        self._status(run, JobStatus.RUNNING)

        streamed = 0

        async def forward(stream: int, data: bytes) -> None:
            nonlocal streamed
            if streamed > self.settings.live_log_limit_bytes:
                return
            streamed += len(data)
            if streamed > self.settings.live_log_limit_bytes:
                self._system_log(run, "live log truncated; the whole log is published with the results")
                return
            run.emit(LogOutput(stream, data))

        with (
            PHASE_SECONDS.labels("algorithm").time(),
            tracer.start_as_current_span("algorithm", attributes={"c2d.job_id": job.job_id}),
        ):
            outcome = await self.backend.run_algorithm(job, forward)
        if run.stop_requested.is_set():
            return await self._stopped(run, job, "running the algorithm")
        verdict = _algorithm_verdict(outcome, env)
        self._system_log(run, f"algorithm exited with code {outcome.exit_code}")

        self._status(run, JobStatus.PUBLISHING)
        # Over the disk quota, only the logs are published: never a half result past the limit.
        with (
            PHASE_SECONDS.labels("publish").time(),
            tracer.start_as_current_span("publish", attributes={"c2d.job_id": job.job_id}),
        ):
            published = await self.backend.publish(
                job, self.settings.publish_timeout_seconds, include_outputs=not outcome.disk_quota_exceeded
            )
        if run.stop_requested.is_set():
            return await self._stopped(run, job, "publishing")
        if not published.ok:
            self._system_log(run, f"publishing failed: {published.reason}")
            await self._end(
                run,
                job,
                StatusChange(
                    int(JobStatus.RESULTS_UPLOAD_FAILED),
                    published.reason,
                    exit_code=outcome.exit_code,
                    out_of_memory=outcome.out_of_memory,
                ),
            )
            return
        status, text = verdict
        await self._end(
            run,
            job,
            StatusChange(
                int(status),
                text,
                exit_code=outcome.exit_code,
                out_of_memory=outcome.out_of_memory,
                results=tuple(published.results),
            ),
        )

    async def _stopped(self, run: JobRun, job: JobContext, phase: str) -> None:
        await self._end(
            run, job, StatusChange(int(JobStatus.STOPPED), f"Stopped while {phase}"), results=False
        )

    async def _end(self, run: JobRun, job: JobContext, change: StatusChange, results: bool = True) -> None:
        """Deletes everything of the job (its results too, unless it published them), then reports
        the terminal status: once a client sees it, nothing of the job's run is left."""
        keep = results and bool(change.results)
        try:
            await self.backend.kill(job.job_id)
            await self.backend.delete_job_files(job.job_id, keep_results=keep)
        except Exception:
            log.exception("clean-up failed")
        log.info("job ended", status=JobStatus(change.status).name, text=change.status_text)
        run.emit(change)


def _algorithm_verdict(outcome: AlgorithmOutcome, env: Environment) -> tuple[JobStatus, str]:
    if outcome.timed_out:
        return (
            JobStatus.ALGORITHM_TIMED_OUT,
            f"the algorithm ran longer than the environment's {env.max_duration_seconds} s",
        )
    if outcome.out_of_memory:
        return JobStatus.OUT_OF_MEMORY, f"the algorithm used more than {env.memory_bytes} bytes of memory"
    if outcome.disk_quota_exceeded:
        return JobStatus.DISK_QUOTA_EXCEEDED, f"the algorithm wrote more than {env.disk_bytes} bytes"
    if outcome.exit_code != 0:
        return JobStatus.ALGORITHM_FAILED, f"the algorithm exited with code {outcome.exit_code}"
    return JobStatus.FINISHED, DEFAULT_STATUS_TEXT[JobStatus.FINISHED]


__all__ = ["JobRunner", "PublishOutcome", "RunnerSettings"]
