"""Jobs this engine is running (or recently ran), and the streams attached to each.

Every status change and log piece of a run is numbered (1, 2, 3, … within the run, which has an id
of its own) and kept. A RunJob stream attaches to a run from a position: it gets what the run
produced after it, then everything as it happens. So an operator that comes back after a restart,
or after its stream was cut, asks for what follows the last piece it stored and loses nothing that
happened meanwhile. Attaching twice never starts a job twice.

What is kept is bounded: a run's live log is already capped by the runner, and once runs have
finished, their log pieces are released oldest first beyond a total (their statuses stay); a
position that falls among released pieces gets one notice in their place.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from c2d.common.v1 import job_pb2
from c2d_common.status import JobStatus
from engine_svc.domain.model import LogOutput, Progress, StatusChange

_END = object()
# Log bytes kept for finished runs, all together, for an operator that re-attaches late.
FINISHED_LOG_BYTES = 64 * 1024 * 1024


class JobRun:
    def __init__(self, job_id: str):
        self.job_id = job_id
        self.run_id = uuid.uuid4().hex
        self.latest: StatusChange | None = None
        self.stop_requested = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # Everything the run produced, in order: progress[i] has position i + 1. A released log
        # piece is None.
        self.progress: list[Progress | None] = []
        self.log_bytes = 0
        self._subscribers: set[asyncio.Queue[object]] = set()
        # Told once the run has ended (the registry that holds it).
        self.on_finished: Callable[[JobRun], None] | None = None

    @property
    def finished(self) -> bool:
        return self.latest is not None and JobStatus(self.latest.status).is_terminal

    def emit(self, progress: Progress) -> None:
        if isinstance(progress, StatusChange):
            if self.finished:
                return
            self.latest = progress
        else:
            self.log_bytes += len(progress.data)
        self.progress.append(progress)
        position = len(self.progress)
        for queue in self._subscribers:
            queue.put_nowait((position, progress))
            if self.finished:
                queue.put_nowait(_END)
        if self.finished and isinstance(progress, StatusChange) and self.on_finished is not None:
            self.on_finished(self)

    def release_logs(self) -> int:
        """Drops the run's log pieces (a finished run, to bound memory); answers the bytes freed."""
        freed = self.log_bytes
        self.progress = [p if isinstance(p, StatusChange) else None for p in self.progress]
        self.log_bytes = 0
        return freed

    def close(self) -> None:
        """Ends every attached stream without a terminal status: the job did not end, this engine
        is going away, and the operator will dispatch the job again."""
        for queue in self._subscribers:
            queue.put_nowait(_END)

    async def follow(self, run_id: str = "", after: int = 0) -> AsyncIterator[tuple[int, Progress]]:
        """(position, progress) of what the run produced after `after` (everything when run_id
        names another run), then of what it produces, until its terminal status."""
        if run_id != self.run_id or not 0 <= after <= len(self.progress):
            after = 0
        # Unbounded on purpose: the producer is one job whose log pieces are already bounded in
        # size, and a slow operator must not lose a status change.
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            missed = self.progress[after:]
            position = after
            released = 0
            for item in missed:
                position += 1
                if item is None:
                    released += 1
                    continue
                if released:
                    yield position - 1, _released_notice(released)
                    released = 0
                yield position, item
            if released:
                yield position, _released_notice(released)
            if self.finished:
                if not missed and self.latest is not None:
                    # Nothing new, and over: the end is said again (a caller that asks is following).
                    yield position, self.latest
                return
            while True:
                entry = await queue.get()
                if entry is _END:
                    return
                assert isinstance(entry, tuple)
                yield entry
        finally:
            self._subscribers.discard(queue)


def _released_notice(count: int) -> LogOutput:
    text = (
        f"[c2d] {count} live log piece(s) of this run were no longer held by the engine when the "
        "operator came back for them; the whole log is published with the job's results\n"
    )
    return LogOutput(job_pb2.LOG_STREAM_SYSTEM, text.encode())


class RunRegistry:
    """Running jobs, plus the most recent finished ones so a late re-attach still learns the end
    (and, within FINISHED_LOG_BYTES for all of them, the log pieces it missed)."""

    def __init__(self, keep_finished: int = 10_000, finished_log_bytes: int = FINISHED_LOG_BYTES):
        self.keep_finished = keep_finished
        self.finished_log_bytes = finished_log_bytes
        self._runs: OrderedDict[str, JobRun] = OrderedDict()
        self._finished: OrderedDict[str, JobRun] = OrderedDict()  # oldest first
        self._finished_bytes = 0

    def get(self, job_id: str) -> JobRun | None:
        return self._runs.get(job_id)

    def add(self, run: JobRun) -> None:
        self.forget(run.job_id)
        self._runs[run.job_id] = run
        run.on_finished = self.finished
        if run.finished:
            self.finished(run)
        self._trim()

    def finished(self, run: JobRun) -> None:
        """A run has ended: its log counts against the finished runs' budget from now on."""
        if run.job_id in self._finished or self._runs.get(run.job_id) is not run:
            return
        self._finished[run.job_id] = run
        self._finished_bytes += run.log_bytes
        while self._finished_bytes > self.finished_log_bytes and self._finished:
            _, oldest = self._finished.popitem(last=False)
            self._finished_bytes -= oldest.release_logs()
        self._trim()

    def _trim(self) -> None:
        excess = len(self._runs) - self.keep_finished
        if excess <= 0:
            return
        for job_id in [j for j, r in self._runs.items() if r.finished][:excess]:
            self.forget(job_id)

    def forget(self, job_id: str) -> None:
        run = self._runs.pop(job_id, None)
        if run is not None and self._finished.pop(job_id, None) is not None:
            self._finished_bytes -= run.log_bytes

    def active(self) -> list[JobRun]:
        return [r for r in self._runs.values() if not r.finished]
