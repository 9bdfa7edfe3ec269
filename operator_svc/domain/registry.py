"""The job registry: register, dispatch to the engine, record progress, fan it out, stop.

Every status change arrives from the engine's RunJob stream (push), is stored with its time and a
per-job sequence number, then published to Watch and GetJobLogs streams.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from c2d.common.v1 import job_pb2
from c2d_common.errors import InvalidArgument, NotFound
from c2d_common.ids import check_job_id, new_job_id
from c2d_common.status import DEFAULT_STATUS_TEXT, JobStatus
from c2d_common.timestamps import utcnow
from operator_svc.domain.engines import EngineSet
from operator_svc.domain.hub import EventHub
from operator_svc.domain.model import (
    EngineGateway,
    EngineUnavailable,
    LogPiece,
    ProgressCursor,
    StatusUpdate,
    StopAnswer,
)
from operator_svc.infra.job_store import JobRecord, JobStore, StoredEvent, StoredJob, StoredLog
from operator_svc.infra.job_writer import JobWriter
from operator_svc.infra.metrics import STATUS_CHANGES

log = structlog.get_logger(__name__)

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class RegistrySettings:
    log_limit_bytes: int = 8 * 1024 * 1024
    # How long a job may wait for an unreachable engine before it ends as a system error.
    engine_retry_seconds: float = 60.0


@dataclass(frozen=True)
class WatchItem:
    event: StoredEvent
    job: JobRecord | None  # set on the first item and on the terminal one


class _LogsEnded:
    """Published on a job's log topic when the job reaches a terminal status."""


LOGS_ENDED = _LogsEnded()


def encode_page_token(created_at: datetime, job_id: str) -> str:
    if created_at.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        created_at = created_at.replace(tzinfo=UTC)
    raw = json.dumps([created_at.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created, job_id = json.loads(raw)
        check_job_id(job_id)
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment.astimezone(UTC), job_id
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError, InvalidArgument):
        raise InvalidArgument(
            "page_token is not one this server issued: pass next_page_token from the previous "
            "response unchanged, or an empty token for the first page"
        ) from None


class JobRegistry:
    def __init__(
        self,
        store: JobStore,
        writer: JobWriter,
        engines: EngineSet,
        hub: EventHub,
        settings: RegistrySettings,
    ):
        self.store = store
        # Every write goes through the writer (many per transaction); reads go to the store.
        self.writer = writer
        self.engines = engines
        self.hub = hub
        self.settings = settings
        self._drivers: dict[str, asyncio.Task[None]] = {}
        # Which engine each driven job is on: the load that pick() balances.
        self._driven_on: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing = False

    # --- registration and dispatch -------------------------------------------------------------

    async def register(
        self,
        *,
        owner: str,
        request_id: str | None,
        spec: bytes,
        dataset_dids: Sequence[str],
        algorithm_did: str,
        environment_id: str,
    ) -> tuple[JobRecord, bool]:
        # Shielded: once the row may be committed, the job must be dispatched even if the caller
        # has gone (deadline, cancel); otherwise it would sit queued with nobody driving it.
        return await asyncio.shield(
            self._register(
                owner=owner,
                request_id=request_id,
                spec=spec,
                dataset_dids=dataset_dids,
                algorithm_did=algorithm_did,
                environment_id=environment_id,
            )
        )

    async def _register(
        self,
        *,
        owner: str,
        request_id: str | None,
        spec: bytes,
        dataset_dids: Sequence[str],
        algorithm_did: str,
        environment_id: str,
    ) -> tuple[JobRecord, bool]:
        record, event = await self.writer.run(
            self.store.create_job_in,
            job_id=new_job_id(),
            owner=owner,
            request_id=request_id,
            spec=spec,
            dataset_dids=dataset_dids,
            algorithm_did=algorithm_did,
            environment_id=environment_id,
            status_text=DEFAULT_STATUS_TEXT[JobStatus.QUEUED],
            now=utcnow(),
            # Given to an engine at once, in the same write: the driver needs no second one.
            engine=self.engines.pick(self._driven_on.values()),
        )
        if event is not None:
            log.info("job registered", job_id=record.job.job_id, owner=owner)
        if not JobStatus(record.job.status).is_terminal:
            # A retried Start of a job nobody drives (its first dispatch was lost) drives it now.
            self._dispatch(record.job)
        if event is None and not _same_spec(record.job.spec, spec):
            # A request id names one request: answering the first job to another request would
            # let a consumer believe its new algorithm or data ran when they never did.
            raise InvalidArgument(
                f"request_id {request_id!r} already started job {record.job.job_id} with other "
                "arguments; give a new job a new request_id"
            )
        return record, event is not None

    def _dispatch(self, job: StoredJob) -> None:
        job_id = job.job_id
        if self._closing or job_id in self._drivers:
            return
        if job.engine is not None:
            self._driven_on[job_id] = job.engine
        # The job as just read or written: where its progress stands needs no second read.
        after = ProgressCursor(job.progress_run_id or "", job.progress_position)
        task = asyncio.create_task(self._drive(job_id, job.owner, job.spec, after), name=f"drive-{job_id}")
        self._drivers[job_id] = task
        task.add_done_callback(
            lambda _t: (self._drivers.pop(job_id, None), self._driven_on.pop(job_id, None))
        )

    async def resume_unfinished(self) -> int:
        """At start: carry on every job that had not ended. The engine attaches to a run it still
        has, or starts the job again."""
        jobs = await asyncio.to_thread(self.store.unfinished_jobs)
        for job in jobs:
            self._dispatch(job)
        return len(jobs)

    async def _drive(self, job_id: str, owner: str, spec: bytes, after: ProgressCursor | None) -> None:
        """Follows the job's run on the engine until its terminal status is recorded. Nothing ends
        this loop but that (or cancellation): an unreachable engine is retried (and after
        engine_retry_seconds the job ends as a system error), and a failure here, such as the
        database being away, is retried by re-attaching, since the engine repeats the current
        status to a stream that attaches."""
        structlog.contextvars.bind_contextvars(job_id=job_id)
        loop = asyncio.get_running_loop()
        unreachable_since: float | None = None
        delay = 0.1
        while True:
            engine_down = False
            try:
                engine = await self._engine_of(job_id)
                if engine is None:
                    return  # the job is gone
                following, after = after, None  # stale once anything was recorded: read it again
                if await self._follow_engine(job_id, owner, spec, engine, following):
                    return
                raise EngineUnavailable("the engine closed the job's stream before it ended")
            except asyncio.CancelledError:
                raise
            except EngineUnavailable as exc:
                engine_down = True
                log.warning("engine unreachable, retrying", error=str(exc), retry_in=delay)
            except Exception:
                log.exception("following the job failed; re-attaching", retry_in=delay)
            try:
                current = await asyncio.to_thread(self.store.get_job, job_id)
                if current is None or JobStatus(current.job.status).is_terminal:
                    return
                if engine_down:
                    now = loop.time()
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since > self.settings.engine_retry_seconds:
                        await self._give_up(job_id)
                        return
                else:
                    unreachable_since = None
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the job store failed; retrying", retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _engine_of(self, job_id: str) -> EngineGateway | None:
        """The engine the job was given to, giving it to the least loaded one the first time."""
        address = self._driven_on.get(job_id)
        if address is None:  # a job registered before engines were chosen at registration
            address = await self.writer.run(
                self.store.assign_engine_in, job_id, self.engines.pick(self._driven_on.values())
            )
        if address is None:
            return None
        self._driven_on[job_id] = address
        engine = self.engines.get(address)
        if engine is None:
            raise EngineUnavailable(f"the job's engine {address} is not among this operator's engines")
        return engine

    async def environments(self) -> list[Any]:
        """What the engines offer (they are meant to offer the same): the first that answers."""
        failure: EngineUnavailable | None = None
        for address in self.engines.addresses:
            engine = self.engines.get(address)
            assert engine is not None
            try:
                return await engine.environments()
            except EngineUnavailable as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _follow_engine(
        self, job_id: str, owner: str, spec: bytes, engine: EngineGateway, after: ProgressCursor | None
    ) -> bool:
        """True once the job's terminal status is recorded. Asks the engine for what follows the
        progress already stored (`after`, else read here), so that nothing it produced while this
        stream was away (a restart of either side, a cut) is missed, and nothing is stored twice."""
        if after is None:
            record = await asyncio.to_thread(self.store.get_job, job_id)
            if record is None:
                return True
            after = ProgressCursor(record.job.progress_run_id or "", record.job.progress_position)
        async for update in engine.run_job(job_id, owner, spec, after):
            if isinstance(update, LogPiece):
                await self._record_log(job_id, update.stream, update.data, update.cursor)
                continue
            record = await self.record_status(job_id, update)
            if record is None or JobStatus(record.job.status).is_terminal:
                return True
        return False

    async def _give_up(self, job_id: str) -> None:
        # Tell the engine first, in case it is only unreachable from here: the job must not go on
        # running somewhere after it is recorded as ended.
        record = await asyncio.to_thread(self.store.get_job, job_id)
        engine = self.engines.get(record.job.engine or "") if record else None
        if engine is not None:
            with contextlib.suppress(Exception):
                await engine.stop_job(job_id)
        await self.record_status(
            job_id,
            StatusUpdate(
                int(JobStatus.SYSTEM_ERROR),
                f"the engine was unreachable for {self.settings.engine_retry_seconds:.0f} s",
            ),
        )

    def _lock(self, job_id: str) -> asyncio.Lock:
        lock = self._locks.get(job_id)
        if lock is None:
            lock = self._locks[job_id] = asyncio.Lock()
        return lock

    async def record_status(self, job_id: str, update: StatusUpdate) -> JobRecord | None:
        async with self._lock(job_id):
            text = update.status_text or DEFAULT_STATUS_TEXT.get(JobStatus(update.status), "")
            stored = await self.writer.run(
                self.store.append_event_in,
                job_id,
                status=update.status,
                status_text=text,
                exit_code=update.exit_code,
                out_of_memory=update.out_of_memory,
                results=update.results,
                now=utcnow(),
                run_id=update.cursor.run_id if update.cursor else None,
                position=update.cursor.position if update.cursor else None,
            )
        if stored is None:
            return None
        event, record = stored
        if event is None:
            return record
        terminal = JobStatus(event.status).is_terminal
        STATUS_CHANGES.labels(JobStatus(event.status).name).inc()
        log.info("job status", job_id=job_id, status=JobStatus(event.status).name, text=text)
        self.hub.publish(("job", job_id), WatchItem(event, record if terminal else None))
        if terminal:
            self.hub.publish(("log", job_id), LOGS_ENDED)
            self._locks.pop(job_id, None)
        return record

    async def _record_log(
        self, job_id: str, stream: int, data: bytes, cursor: ProgressCursor | None = None
    ) -> None:
        row = await self.writer.run(
            self.store.append_log_in,
            job_id,
            stream=stream,
            data=data,
            now=utcnow(),
            limit_bytes=self.settings.log_limit_bytes,
            run_id=cursor.run_id if cursor else None,
            position=cursor.position if cursor else None,
        )
        if row is not None:
            self.hub.publish(("log", job_id), row)

    # --- queries --------------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        record = await asyncio.to_thread(self.store.get_job, job_id)
        if record is None:
            raise NotFound(f"no job {job_id}")
        return record

    async def history(self, job_id: str) -> list[StoredEvent]:
        return await asyncio.to_thread(self.store.get_events, job_id, 0)

    async def list_jobs(
        self, *, owner: str | None, statuses: Sequence[int], page_size: int, page_token: str
    ) -> tuple[list[JobRecord], str]:
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}, not {page_size}")
        for status in statuses:
            if status not in JobStatus._value2member_map_:
                raise InvalidArgument(f"unknown job status {status} in statuses")
        limit = page_size or DEFAULT_PAGE_SIZE
        after = decode_page_token(page_token) if page_token else None
        records = await asyncio.to_thread(
            self.store.list_jobs, owner=owner, statuses=statuses, limit=limit + 1, after=after
        )
        token = ""
        if len(records) > limit:
            records = records[:limit]
            last = records[-1].job
            token = encode_page_token(last.created_at, last.job_id)
        return records, token

    # --- stop -----------------------------------------------------------------------------------

    async def stop(self, job_id: str) -> JobRecord:
        record = await self.get(job_id)
        if JobStatus(record.job.status).is_terminal:
            return record
        engine = self.engines.get(record.job.engine) if record.job.engine else None
        answer = StopAnswer.NOT_RUNNING
        if engine is not None:
            try:
                answer = await engine.stop_job(job_id)
            except EngineUnavailable:
                answer = StopAnswer.NOT_RUNNING
        elif record.job.engine is None:
            # Not given to an engine yet: make sure it never is, then end it here. (Its driver may
            # have just given it to one: then that engine is told, and keeps a tombstone.)
            await self._cancel_driver(job_id)
            again = await self.get(job_id)
            late = self.engines.get(again.job.engine) if again.job.engine else None
            if late is not None:
                with contextlib.suppress(EngineUnavailable):
                    await late.stop_job(job_id)
        if answer is StopAnswer.NOT_RUNNING:
            # The engine has no run for it (still queued, or the engine lost it): the engine now
            # refuses to start it, so ending it here is final.
            await self._cancel_driver(job_id)
            await self.record_status(job_id, StatusUpdate(int(JobStatus.STOPPED), "Stopped by its owner"))
            return await self.get(job_id)
        # The engine reports the end on the job's stream: STOPPED once every process and file is
        # gone, or the status the job had already ended with.
        return await self._wait_terminal(job_id)

    async def _cancel_driver(self, job_id: str) -> None:
        driver = self._drivers.get(job_id)
        if driver is not None:
            driver.cancel()
            # wait(), not await: a CancelledError here must be this call's own, never the driver's.
            await asyncio.wait([driver])

    async def _wait_terminal(self, job_id: str) -> JobRecord:
        async for item in self.watch(job_id, 0):
            if JobStatus(item.event.status).is_terminal and item.job is not None:
                return item.job
        return await self.get(job_id)

    # --- streams --------------------------------------------------------------------------------

    async def watch(self, job_id: str, after_sequence: int) -> AsyncIterator[WatchItem]:
        if after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative")
        with self.hub.subscribe(("job", job_id)) as subscription:
            found = await asyncio.to_thread(self.store.get_job_with_events, job_id, after_sequence)
            if found is None:
                raise NotFound(f"no job {job_id}")
            record, events = found
            # Only events up to the job as read: each message must pair an event with the job as
            # of that event. Later ones come through the subscription, taken out before the read.
            events = [e for e in events if e.sequence <= record.job.sequence]
            if after_sequence == 0:
                events = events[-1:]  # from the current status on
            last = after_sequence
            for index, event in enumerate(events):
                terminal = JobStatus(event.status).is_terminal
                yield WatchItem(event, record if index == 0 or terminal else None)
                last = event.sequence
                if terminal:
                    return
            if not events and JobStatus(record.job.status).is_terminal:
                return
            while True:
                item = await subscription.get()
                # Lagged, or a gap (an event stored but never published, by a driver cancelled
                # between the two): catch up from the database, which has every event.
                if subscription.lagged or item is None or item.event.sequence > last + 1:
                    subscription.reset_after_lag()
                    for event in await asyncio.to_thread(self.store.get_events, job_id, last):
                        terminal = JobStatus(event.status).is_terminal
                        yield WatchItem(event, await self.get(job_id) if terminal else None)
                        last = event.sequence
                        if terminal:
                            return
                    continue
                if item.event.sequence <= last:
                    continue
                yield item
                last = item.event.sequence
                if JobStatus(item.event.status).is_terminal:
                    return

    async def logs(self, job_id: str, follow: bool, after_sequence: int) -> AsyncIterator[StoredLog]:
        if after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative")
        with self.hub.subscribe(("log", job_id)) as subscription:
            record = await self.get(job_id)
            last = after_sequence
            for row in await asyncio.to_thread(self.store.get_logs, job_id, after_sequence):
                yield row
                last = row.sequence
            if not follow or JobStatus(record.job.status).is_terminal:
                return
            while True:
                item: Any = await subscription.get()
                if subscription.lagged or item is None or item is LOGS_ENDED:
                    subscription.reset_after_lag()
                    for row in await asyncio.to_thread(self.store.get_logs, job_id, last):
                        yield row
                        last = row.sequence
                    if item is LOGS_ENDED:
                        return
                    current = await self.get(job_id)
                    if JobStatus(current.job.status).is_terminal:
                        return
                    continue
                if item.sequence <= last:
                    continue
                yield item
                last = item.sequence

    async def close(self) -> None:
        """Stops following engines (the jobs go on there and are re-attached at the next start)."""
        self._closing = True
        drivers = list(self._drivers.values())
        for task in drivers:
            task.cancel()
        for task in drivers:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _same_spec(stored: bytes, sent: bytes) -> bool:
    """Whether two serialized job specs say the same thing (the bytes may differ: map entries,
    such as a DDO's, need not serialize in one order)."""
    if stored == sent:
        return True
    try:
        return job_pb2.JobSpec.FromString(stored) == job_pb2.JobSpec.FromString(sent)
    except Exception:  # an unreadable spec is not the same as any other
        return False
