"""Jobs this engine is running (or recently ran), and the streams attached to each.

A RunJob stream attaches to a run: it gets the run's current status first, then every status change
and log piece as it happens. Attaching twice (the operator reconnecting) never starts a job twice.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator

from c2d_common.status import JobStatus
from engine_svc.domain.model import LogOutput, Progress, StatusChange

_END = object()


class JobRun:
    def __init__(self, job_id: str):
        self.job_id = job_id
        self.latest: StatusChange | None = None
        self.stop_requested = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._subscribers: set[asyncio.Queue[object]] = set()

    @property
    def finished(self) -> bool:
        return self.latest is not None and JobStatus(self.latest.status).is_terminal

    def emit(self, progress: Progress) -> None:
        if isinstance(progress, StatusChange):
            if self.finished:
                return
            self.latest = progress
        for queue in self._subscribers:
            queue.put_nowait(progress)
            if self.finished:
                queue.put_nowait(_END)

    def close(self) -> None:
        """Ends every attached stream without a terminal status: the job did not end, this engine
        is going away, and the operator will dispatch the job again."""
        for queue in self._subscribers:
            queue.put_nowait(_END)

    async def follow(self) -> AsyncIterator[Progress]:
        # Unbounded on purpose: the producer is one job whose log pieces are already bounded in
        # size, and a slow operator must not lose a status change.
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            if self.latest is not None:
                yield self.latest
                if self.finished:
                    return
            while True:
                item = await queue.get()
                if item is _END:
                    return
                assert isinstance(item, StatusChange | LogOutput)
                yield item
        finally:
            self._subscribers.discard(queue)


class RunRegistry:
    """Running jobs, plus the most recent finished ones so a late re-attach still learns the end."""

    def __init__(self, keep_finished: int = 10_000):
        self.keep_finished = keep_finished
        self._runs: OrderedDict[str, JobRun] = OrderedDict()

    def get(self, job_id: str) -> JobRun | None:
        return self._runs.get(job_id)

    def add(self, run: JobRun) -> None:
        self._runs[run.job_id] = run
        self._trim()

    def _trim(self) -> None:
        excess = len(self._runs) - self.keep_finished
        if excess <= 0:
            return
        for job_id in [j for j, r in self._runs.items() if r.finished][:excess]:
            del self._runs[job_id]

    def forget(self, job_id: str) -> None:
        self._runs.pop(job_id, None)

    def active(self) -> list[JobRun]:
        return [r for r in self._runs.values() if not r.finished]
