"""A run's progress is numbered and kept, so a stream that attaches again from a position gets
what it missed, once; finished runs' logs are released beyond a budget, with a notice instead."""

from __future__ import annotations

import asyncio

from c2d.common.v1 import job_pb2
from c2d_common.status import JobStatus
from engine_svc.domain.model import LogOutput, StatusChange
from engine_svc.domain.runs import JobRun, RunRegistry


def _status(status: JobStatus) -> StatusChange:
    return StatusChange(int(status))


async def _collect(run: JobRun, run_id: str = "", after: int = 0) -> list[tuple[int, object]]:
    return [item async for item in run.follow(run_id, after)]


async def test_a_stream_attaching_again_gets_exactly_what_followed_its_position() -> None:
    run = JobRun("a" * 32)
    run.emit(_status(JobStatus.STARTED))
    run.emit(LogOutput(job_pb2.LOG_STREAM_STDOUT, b"one\n"))
    run.emit(_status(JobStatus.RUNNING))
    run.emit(LogOutput(job_pb2.LOG_STREAM_STDOUT, b"two\n"))
    run.emit(_status(JobStatus.FINISHED))
    everything = await _collect(run)
    assert [position for position, _ in everything] == [1, 2, 3, 4, 5]
    assert await _collect(run, run.run_id, 3) == everything[3:]
    # Another run's position (an engine restarted since): everything of this run.
    assert await _collect(run, "another-run", 3) == everything
    # Nothing missed, and over: the end once more.
    assert await _collect(run, run.run_id, 5) == [(5, _status(JobStatus.FINISHED))]


async def test_a_live_stream_gets_what_comes_after_its_replay_without_gaps() -> None:
    run = JobRun("b" * 32)
    run.emit(_status(JobStatus.RUNNING))
    follower = asyncio.create_task(_collect(run, run.run_id, 0))
    await asyncio.sleep(0)
    run.emit(LogOutput(job_pb2.LOG_STREAM_STDOUT, b"live\n"))
    run.emit(_status(JobStatus.FINISHED))
    seen = await asyncio.wait_for(follower, 5)
    assert [position for position, _ in seen] == [1, 2, 3]


async def test_finished_runs_release_their_logs_oldest_first_beyond_the_budget() -> None:
    registry = RunRegistry(finished_log_bytes=10)
    runs = []
    for index in range(3):
        run = JobRun(str(index) * 32)
        registry.add(run)
        run.emit(_status(JobStatus.RUNNING))
        run.emit(LogOutput(job_pb2.LOG_STREAM_STDOUT, b"123456"))
        run.emit(_status(JobStatus.FINISHED))
        runs.append(run)
    # 6 bytes each, 10 at most: only the newest keeps its log.
    assert [r.log_bytes for r in runs] == [0, 0, 6]
    replay = await _collect(runs[0], runs[0].run_id, 0)
    assert [position for position, _ in replay] == [1, 2, 3], "positions stay where they were"
    notice = replay[1][1]
    assert isinstance(notice, LogOutput) and notice.stream == job_pb2.LOG_STREAM_SYSTEM
    assert b"no longer held" in notice.data
    assert replay[2][1] == _status(JobStatus.FINISHED), "statuses are never released"
    # A running job's log is never released, whatever the budget.
    running = JobRun("9" * 32)
    registry.add(running)
    running.emit(LogOutput(job_pb2.LOG_STREAM_STDOUT, b"x" * 100))
    assert running.log_bytes == 100
