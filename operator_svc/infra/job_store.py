"""Jobs, their events, results and logs in SQL (SQLite or PostgreSQL).

Blocking. Each write exists twice: `x(...)`, its own transaction, and `x_in(connection, ...)`,
inside a transaction the caller holds, so that the JobWriter can commit many writes at once (see
job_writer.py). Every write that changes a job changes it in the same statement that decides its
new sequence number (UPDATE … RETURNING), so two writers can never hand out the same one, on
SQLite and PostgreSQL alike.

Statements are SQLAlchemy Core built once at import, and rows come back as small frozen dataclasses:
the ORM's unit of work and model construction cost more CPU per event than the database did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from c2d_common.errors import Unavailable
from c2d_common.status import TERMINAL_STATUSES, JobStatus
from operator_svc.infra.tables import JobEventRow, JobRow, LogRow, ResultRow

T = TypeVar("T")

JOBS = JobRow.__table__  # type: ignore[attr-defined]
EVENTS = JobEventRow.__table__  # type: ignore[attr-defined]
RESULTS = ResultRow.__table__  # type: ignore[attr-defined]
LOGS = LogRow.__table__  # type: ignore[attr-defined]
_TERMINAL = sorted(int(s) for s in TERMINAL_STATUSES)
LOG_STREAM_SYSTEM = 3


@dataclass(frozen=True, slots=True)
class NewResult:
    name: str
    kind: int
    size: int
    sha256: str
    location: str


# A stored result has the same fields as a new one.
StoredResult = NewResult


@dataclass(frozen=True, slots=True)
class StoredJob:
    job_id: str
    owner: str
    request_id: str | None
    status: int
    status_text: str
    spec: bytes
    dataset_dids: str
    algorithm_did: str
    environment_id: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    out_of_memory: bool
    sequence: int
    log_bytes: int
    engine: str | None
    log_sequence: int
    progress_run_id: str | None = None
    progress_position: int = 0


@dataclass(frozen=True, slots=True)
class StoredEvent:
    job_id: str
    sequence: int
    status: int
    status_text: str
    exit_code: int | None
    out_of_memory: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredLog:
    job_id: str
    sequence: int
    stream: int
    data: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job with its results (which exist only once it has ended)."""

    job: StoredJob
    results: list[StoredResult]


_JOB_COLUMNS = [JOBS.c[name] for name in StoredJob.__slots__]
_EVENT_COLUMNS = [EVENTS.c[name] for name in StoredEvent.__slots__]
_LOG_COLUMNS = [LOGS.c[name] for name in StoredLog.__slots__]
_RESULT_COLUMNS = [RESULTS.c[name] for name in StoredResult.__slots__]


def _job(row: Sequence[Any], parse_time: Callable[[Any], Any] = lambda value: value) -> StoredJob:
    """A jobs row, its columns in StoredJob's order."""
    (
        job_id,
        owner,
        request_id,
        status,
        status_text,
        spec,
        dataset_dids,
        algorithm_did,
        environment_id,
        created_at,
        updated_at,
        finished_at,
        exit_code,
        out_of_memory,
        sequence,
        log_bytes,
        engine,
        log_sequence,
        progress_run_id,
        progress_position,
    ) = row
    return StoredJob(
        job_id=job_id,
        owner=owner,
        request_id=request_id,
        status=int(status),
        status_text=status_text,
        spec=bytes(spec),
        dataset_dids=dataset_dids,
        algorithm_did=algorithm_did,
        environment_id=environment_id,
        created_at=parse_time(created_at),
        updated_at=parse_time(updated_at),
        finished_at=None if finished_at is None else parse_time(finished_at),
        exit_code=exit_code,
        out_of_memory=bool(out_of_memory),
        sequence=int(sequence),
        log_bytes=int(log_bytes),
        engine=engine,
        log_sequence=int(log_sequence),
        progress_run_id=progress_run_id,
        progress_position=int(progress_position or 0),
    )


def _event(row: Sequence[Any]) -> StoredEvent:
    job_id, sequence, status, status_text, exit_code, out_of_memory, created_at = row
    return StoredEvent(
        job_id, int(sequence), int(status), status_text, exit_code, bool(out_of_memory), created_at
    )


def _log(row: Sequence[Any]) -> StoredLog:
    job_id, sequence, stream, data, created_at = row
    return StoredLog(job_id, int(sequence), int(stream), bytes(data), created_at)


class _HotWrites:
    """The writes on the path of every status change and log piece, as plain SQL for the driver:
    through SQLAlchemy's statement machinery each cost the operator several times the CPU the
    driver and the database did. One text serves SQLite and PostgreSQL; only the parameter style
    and the storage of times differ (SQLite keeps them as text, in SQLAlchemy's own format, so
    that Core reads them back as before)."""

    def __init__(self, dialect: str):
        self.postgres = dialect == "postgresql"
        columns = ", ".join(StoredJob.__slots__)
        terminal = ", ".join(str(s) for s in _TERMINAL)
        advance = (
            "UPDATE jobs SET sequence = sequence + 1, status = :new_status, status_text = :new_text, "
            "updated_at = :now, exit_code = COALESCE(:new_exit_code, exit_code), "
            "out_of_memory = (out_of_memory OR :new_out_of_memory){finished}{cursor} "
            f"WHERE job_id = :job_id AND status NOT IN ({terminal}) "
            "AND (status != :new_status OR status_text != :new_text OR :with_results) "
            f"RETURNING {columns}"
        )
        # Keyed by (terminal, with a progress cursor).
        cursor = ", progress_run_id = :run_id, progress_position = :position"
        self.advance = {
            (terminal_, with_cursor): self._sql(
                advance.format(
                    finished=", finished_at = :now" if terminal_ else "", cursor=cursor if with_cursor else ""
                )
            )
            for terminal_ in (False, True)
            for with_cursor in (False, True)
        }
        # A status the job already has, repeated by an engine: only the cursor moves.
        self.move_cursor = self._sql(
            "UPDATE jobs SET progress_run_id = :run_id, progress_position = :position WHERE job_id = :job_id"
        )
        self.insert_job = self._insert("jobs", StoredJob.__slots__)
        self.insert_event = self._insert("job_events", StoredEvent.__slots__)
        self.add_log_bytes = self._sql(
            "UPDATE jobs SET log_bytes = log_bytes + :size, log_sequence = log_sequence + 1, "
            "progress_run_id = COALESCE(:run_id, progress_run_id), "
            "progress_position = COALESCE(:position, progress_position) "
            "WHERE job_id = :job_id AND log_bytes + :size <= :limit RETURNING log_sequence"
        )
        # Past the limit: once, a notice instead of the piece; log_bytes then stays above the limit.
        self.mark_log_truncated = self._sql(
            "UPDATE jobs SET log_bytes = :limit + 1, log_sequence = log_sequence + 1, "
            "progress_run_id = COALESCE(:run_id, progress_run_id), "
            "progress_position = COALESCE(:position, progress_position) "
            "WHERE job_id = :job_id AND log_bytes <= :limit RETURNING log_sequence"
        )
        self.insert_log = self._insert("job_logs", StoredLog.__slots__)

    def _sql(self, text: str) -> str:
        return re.sub(r":(\w+)", r"%(\1)s", text) if self.postgres else text

    def _insert(self, table: str, names: tuple[str, ...]) -> str:
        return self._sql(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})"
        )

    def time(self, moment: datetime) -> Any:
        # SQLAlchemy's SQLite DateTime format: the fields as given (always UTC here), no zone.
        return moment if self.postgres else moment.strftime("%Y-%m-%d %H:%M:%S.%f")

    def parse_time(self, value: Any) -> Any:
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    def job_values(self, job: StoredJob) -> dict[str, Any]:
        values = {name: getattr(job, name) for name in StoredJob.__slots__}
        for name in ("created_at", "updated_at"):
            values[name] = self.time(values[name])
        return values

    def event_values(self, event: StoredEvent) -> dict[str, Any]:
        values = {name: getattr(event, name) for name in StoredEvent.__slots__}
        values["created_at"] = self.time(event.created_at)
        return values

    def log_values(self, row: StoredLog) -> dict[str, Any]:
        values = {name: getattr(row, name) for name in StoredLog.__slots__}
        values["created_at"] = self.time(row.created_at)
        return values


# --- statements, built once ----------------------------------------------------------------------

_SELECT_JOB = select(*_JOB_COLUMNS).where(JOBS.c.job_id == bindparam("job_id"))
_SELECT_JOB_BY_REQUEST = select(*_JOB_COLUMNS).where(
    JOBS.c.owner == bindparam("owner"), JOBS.c.request_id == bindparam("request_id")
)
_SELECT_RESULTS = (
    select(*_RESULT_COLUMNS)
    .where(RESULTS.c.job_id == bindparam("job_id"))
    .order_by(RESULTS.c.kind, RESULTS.c.name)
)
_SELECT_EVENTS = (
    select(*_EVENT_COLUMNS)
    .where(EVENTS.c.job_id == bindparam("job_id"), EVENTS.c.sequence > bindparam("after"))
    .order_by(EVENTS.c.sequence)
)
_SELECT_LOGS = (
    select(*_LOG_COLUMNS)
    .where(LOGS.c.job_id == bindparam("job_id"), LOGS.c.sequence > bindparam("after"))
    .order_by(LOGS.c.sequence)
)
_INSERT_RESULT = insert(RESULTS)


_ASSIGN_ENGINE = (
    update(JOBS)
    .where(JOBS.c.job_id == bindparam("b_job_id"), JOBS.c.engine.is_(None))
    .values(engine=bindparam("new_engine"))
)


class JobStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._hot = _HotWrites(engine.dialect.name)

    # --- plumbing -------------------------------------------------------------------------------

    def _read(self, work: Callable[[Connection], T]) -> T:
        """A read, tried once more on a connection the database closed under us (a restart of
        PostgreSQL invalidates the whole pool; the next connection is a new one)."""
        for attempt in (1, 2):
            try:
                with self.engine.connect() as connection:
                    return work(connection)
            except DBAPIError as exc:
                if attempt == 1 and exc.connection_invalidated:
                    continue
                if isinstance(exc, OperationalError):
                    raise Unavailable("the jobs database is unavailable; try again shortly") from exc
                raise
        raise AssertionError("unreachable")

    def _write(self, work: Callable[[Connection], T]) -> T:
        with self.engine.begin() as connection:
            return work(connection)

    @staticmethod
    def _results_in(connection: Connection, job_id: str) -> list[StoredResult]:
        return [StoredResult(*row) for row in connection.execute(_SELECT_RESULTS, {"job_id": job_id})]

    def _record_in(self, connection: Connection, job: StoredJob) -> JobRecord:
        ended = job.status in TERMINAL_STATUSES
        return JobRecord(job, self._results_in(connection, job.job_id) if ended else [])

    def _get_job_in(self, connection: Connection, job_id: str) -> JobRecord | None:
        row = connection.execute(_SELECT_JOB, {"job_id": job_id}).first()
        return None if row is None else self._record_in(connection, _job(row))

    # --- writes ---------------------------------------------------------------------------------

    def create_job(self, **fields: Any) -> tuple[JobRecord, StoredEvent | None]:
        return self._write(lambda connection: self.create_job_in(connection, **fields))

    def create_job_in(
        self,
        connection: Connection,
        *,
        job_id: str,
        owner: str,
        request_id: str | None,
        spec: bytes,
        dataset_dids: Sequence[str],
        algorithm_did: str,
        environment_id: str,
        status_text: str,
        now: datetime,
        engine: str | None = None,
    ) -> tuple[JobRecord, StoredEvent | None]:
        """Inserts the job with its first event (queued), given to `engine` if one is named. With a
        request_id already used by this owner, answers that job instead and no event."""
        if request_id:
            existing = connection.execute(
                _SELECT_JOB_BY_REQUEST, {"owner": owner, "request_id": request_id}
            ).first()
            if existing is not None:
                return self._record_in(connection, _job(existing)), None
        job = StoredJob(
            job_id=job_id,
            owner=owner,
            request_id=request_id or None,
            status=int(JobStatus.QUEUED),
            status_text=status_text,
            spec=spec,
            dataset_dids=json.dumps(list(dataset_dids)),
            algorithm_did=algorithm_did,
            environment_id=environment_id,
            created_at=now,
            updated_at=now,
            finished_at=None,
            exit_code=None,
            out_of_memory=False,
            sequence=1,
            log_bytes=0,
            engine=engine,
            log_sequence=0,
        )
        event = StoredEvent(
            job_id=job_id,
            sequence=1,
            status=job.status,
            status_text=status_text,
            exit_code=None,
            out_of_memory=False,
            created_at=now,
        )
        if not request_id:
            self._insert_job_in(connection, job, event)
            return JobRecord(job, []), event
        try:
            # A savepoint: a lost race must not undo the other writes of the caller's transaction.
            with connection.begin_nested():
                self._insert_job_in(connection, job, event)
        except IntegrityError:
            # Two retries of one Start raced (another operator won): answer its job.
            if request_id:
                existing = connection.execute(
                    _SELECT_JOB_BY_REQUEST, {"owner": owner, "request_id": request_id}
                ).first()
                if existing is not None:
                    return self._record_in(connection, _job(existing)), None
            raise
        return JobRecord(job, []), event

    def _insert_job_in(self, connection: Connection, job: StoredJob, event: StoredEvent) -> None:
        connection.exec_driver_sql(self._hot.insert_job, self._hot.job_values(job))
        connection.exec_driver_sql(self._hot.insert_event, self._hot.event_values(event))

    def append_event(self, job_id: str, **fields: Any) -> tuple[StoredEvent | None, JobRecord] | None:
        return self._write(lambda connection: self.append_event_in(connection, job_id, **fields))

    def append_event_in(
        self,
        connection: Connection,
        job_id: str,
        *,
        status: int,
        status_text: str,
        exit_code: int | None,
        out_of_memory: bool,
        results: Sequence[NewResult],
        now: datetime,
        run_id: str | None = None,
        position: int | None = None,
    ) -> tuple[StoredEvent | None, JobRecord] | None:
        """Records a status change; answers None for an unknown job. No event is recorded (the
        answer's event is None) when the job has already ended, since a terminal status is final
        whatever arrives late, or when nothing changes: an engine that is re-attached to repeats
        the job's current status."""
        terminal = status in TERMINAL_STATUSES
        hot = self._hot
        with_cursor = run_id is not None and position is not None
        row = connection.exec_driver_sql(
            hot.advance[(terminal, with_cursor)],
            {
                "job_id": job_id,
                "new_status": status,
                "new_text": status_text,
                "with_results": bool(results),
                "now": hot.time(now),
                "new_exit_code": exit_code,
                "new_out_of_memory": out_of_memory,
                "run_id": run_id,
                "position": position,
            },
        ).first()
        if row is None:
            current = self._get_job_in(connection, job_id)
            if current is not None and with_cursor and current.job.status not in TERMINAL_STATUSES:
                connection.exec_driver_sql(
                    hot.move_cursor, {"job_id": job_id, "run_id": run_id, "position": position}
                )
            return None if current is None else (None, current)
        job = _job(row, hot.parse_time)
        event = StoredEvent(
            job_id=job_id,
            sequence=job.sequence,
            status=status,
            status_text=status_text,
            exit_code=exit_code,
            out_of_memory=out_of_memory,
            created_at=now,
        )
        connection.exec_driver_sql(hot.insert_event, hot.event_values(event))
        if results:
            connection.execute(
                _INSERT_RESULT,
                [{"job_id": job_id, **{n: getattr(r, n) for n in StoredResult.__slots__}} for r in results],
            )
        # Results only matter (and only exist) once the job has ended.
        stored = sorted(results, key=lambda r: (r.kind, r.name)) if terminal else []
        return event, JobRecord(
            job, [StoredResult(r.name, r.kind, r.size, r.sha256, r.location) for r in stored]
        )

    def append_log(self, job_id: str, **fields: Any) -> StoredLog | None:
        return self._write(lambda connection: self.append_log_in(connection, job_id, **fields))

    def append_log_in(
        self,
        connection: Connection,
        job_id: str,
        *,
        stream: int,
        data: bytes,
        now: datetime,
        limit_bytes: int,
        run_id: str | None = None,
        position: int | None = None,
    ) -> StoredLog | None:
        """Keeps a piece of the job's live log, up to limit_bytes per job; past the limit a single
        notice is kept instead (the whole log is still published with the results)."""
        hot = self._hot
        cursor = {"run_id": run_id, "position": position}
        sequence = connection.exec_driver_sql(
            hot.add_log_bytes, {"job_id": job_id, "size": len(data), "limit": limit_bytes, **cursor}
        ).scalar()
        if sequence is None:
            sequence = connection.exec_driver_sql(
                hot.mark_log_truncated, {"job_id": job_id, "limit": limit_bytes, **cursor}
            ).scalar()
            if sequence is None:
                if run_id is not None and position is not None:
                    connection.exec_driver_sql(hot.move_cursor, {"job_id": job_id, **cursor})
                return None  # an unknown job, or one whose notice is already kept
            data = (
                f"[c2d] live log truncated at {limit_bytes} bytes; "
                "the whole log is published with the job's results\n"
            ).encode()
            stream = LOG_STREAM_SYSTEM
        row = StoredLog(job_id=job_id, sequence=int(sequence), stream=stream, data=data, created_at=now)
        connection.exec_driver_sql(hot.insert_log, hot.log_values(row))
        return row

    def assign_engine(self, job_id: str, engine: str) -> str | None:
        return self._write(lambda connection: self.assign_engine_in(connection, job_id, engine))

    def assign_engine_in(self, connection: Connection, job_id: str, engine: str) -> str | None:
        """Gives the job to engine unless it was given to one already; answers the job's engine
        (None for an unknown job). Atomic: of two operators racing, one choice wins."""
        connection.execute(_ASSIGN_ENGINE, {"b_job_id": job_id, "new_engine": engine})
        return connection.execute(select(JOBS.c.engine).where(JOBS.c.job_id == job_id)).scalar()

    # --- reads ----------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        return self._read(lambda connection: self._get_job_in(connection, job_id))

    def get_events(self, job_id: str, after_sequence: int = 0) -> list[StoredEvent]:
        return self._read(
            lambda connection: [
                _event(row)
                for row in connection.execute(_SELECT_EVENTS, {"job_id": job_id, "after": after_sequence})
            ]
        )

    def get_job_with_events(
        self, job_id: str, after_sequence: int = 0
    ) -> tuple[JobRecord, list[StoredEvent]] | None:
        """The job and its events after after_sequence, read on one connection. Events stored
        after the job was read may be among them (the caller filters by the job's sequence)."""

        def work(connection: Connection) -> tuple[JobRecord, list[StoredEvent]] | None:
            record = self._get_job_in(connection, job_id)
            if record is None:
                return None
            rows = connection.execute(_SELECT_EVENTS, {"job_id": job_id, "after": after_sequence})
            return record, [_event(row) for row in rows]

        return self._read(work)

    def get_logs(self, job_id: str, after_sequence: int = 0) -> list[StoredLog]:
        return self._read(
            lambda connection: [
                _log(row)
                for row in connection.execute(_SELECT_LOGS, {"job_id": job_id, "after": after_sequence})
            ]
        )

    def list_jobs(
        self,
        *,
        owner: str | None,
        statuses: Sequence[int],
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[JobRecord]:
        """Newest first; `after` is the (created_at, job_id) of the last job of the previous page."""
        query = select(*_JOB_COLUMNS)
        if owner:
            query = query.where(JOBS.c.owner == owner)
        if statuses:
            query = query.where(JOBS.c.status.in_(list(statuses)))
        if after is not None:
            created, job_id = after
            query = query.where(
                or_(
                    JOBS.c.created_at < created,
                    and_(JOBS.c.created_at == created, JOBS.c.job_id < job_id),
                )
            )
        query = query.order_by(JOBS.c.created_at.desc(), JOBS.c.job_id.desc()).limit(limit)

        def work(connection: Connection) -> list[JobRecord]:
            jobs = [_job(row) for row in connection.execute(query)]
            ended = [j.job_id for j in jobs if j.status in TERMINAL_STATUSES]
            results: dict[str, list[StoredResult]] = {}
            if ended:
                rows = connection.execute(
                    select(RESULTS.c.job_id, *_RESULT_COLUMNS)
                    .where(RESULTS.c.job_id.in_(ended))
                    .order_by(RESULTS.c.job_id, RESULTS.c.kind, RESULTS.c.name)
                )
                for row in rows:
                    results.setdefault(row[0], []).append(StoredResult(*row[1:]))
            return [JobRecord(job, results.get(job.job_id, [])) for job in jobs]

        return self._read(work)

    def count_by_status(self) -> dict[int, int]:
        def work(connection: Connection) -> dict[int, int]:
            rows = connection.execute(select(JOBS.c.status, func.count()).group_by(JOBS.c.status))
            return {int(status): int(count) for status, count in rows}

        return self._read(work)

    def unfinished_jobs(self) -> list[StoredJob]:
        query = select(*_JOB_COLUMNS).where(JOBS.c.status.not_in(_TERMINAL)).order_by(JOBS.c.created_at)
        return self._read(lambda connection: [_job(row) for row in connection.execute(query)])
