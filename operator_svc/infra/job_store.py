"""Jobs, their events, results and logs in SQL (SQLite or PostgreSQL). Blocking; the domain calls it
from worker threads. Every write that changes a job happens in one transaction with its event."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from c2d_common.status import TERMINAL_STATUSES, JobStatus
from operator_svc.infra.tables import JobEventRow, JobRow, LogRow, ResultRow


@dataclass(frozen=True)
class NewResult:
    name: str
    kind: int
    size: int
    sha256: str
    location: str


@dataclass(frozen=True)
class JobRecord:
    """A job with its results, detached from any session."""

    job: JobRow
    results: list[ResultRow]


class JobStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @staticmethod
    def _lock_job(session: Session, job_id: str) -> JobRow | None:
        """The job's row, locked for the rest of the transaction. A no-op UPDATE first: SQLite
        ignores FOR UPDATE and takes its write lock only at the first write, so without it two
        writers could both read the same sequence number."""
        session.execute(update(JobRow).where(col(JobRow.job_id) == job_id).values(job_id=JobRow.job_id))
        return session.exec(select(JobRow).where(JobRow.job_id == job_id).with_for_update()).first()

    def create_job(
        self,
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
    ) -> tuple[JobRecord, JobEventRow | None]:
        """Inserts the job with its first event (queued). With a request_id already used by this
        owner, answers that job instead and no event."""
        if request_id:
            existing = self._find_by_request(owner, request_id)
            if existing is not None:
                return existing, None
        job = JobRow(
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
            sequence=1,
        )
        event = JobEventRow(
            job_id=job_id, sequence=1, status=int(JobStatus.QUEUED), status_text=status_text, created_at=now
        )
        try:
            with self._session() as session:
                session.add(job)
                session.flush()  # the job row must exist before its event (foreign key)
                session.add(event)
                session.commit()
        except IntegrityError:
            # Two retries of one Start raced: the other one won, answer its job.
            if request_id:
                existing = self._find_by_request(owner, request_id)
                if existing is not None:
                    return existing, None
            raise
        return JobRecord(job, []), event

    def _find_by_request(self, owner: str, request_id: str) -> JobRecord | None:
        with self._session() as session:
            job = session.exec(
                select(JobRow).where(JobRow.owner == owner, JobRow.request_id == request_id)
            ).first()
            if job is None:
                return None
            return JobRecord(job, self._results(session, job.job_id))

    @staticmethod
    def _results(session: Session, job_id: str) -> list[ResultRow]:
        return list(
            session.exec(
                select(ResultRow)
                .where(ResultRow.job_id == job_id)
                .order_by(col(ResultRow.kind), col(ResultRow.name))
            ).all()
        )

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._session() as session:
            job = session.get(JobRow, job_id)
            if job is None:
                return None
            return JobRecord(job, self._results(session, job_id))

    def get_events(self, job_id: str, after_sequence: int = 0) -> list[JobEventRow]:
        with self._session() as session:
            return list(
                session.exec(
                    select(JobEventRow)
                    .where(JobEventRow.job_id == job_id, JobEventRow.sequence > after_sequence)
                    .order_by(col(JobEventRow.sequence))
                ).all()
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
        with self._session() as session:
            query = select(JobRow)
            if owner:
                query = query.where(JobRow.owner == owner)
            if statuses:
                query = query.where(col(JobRow.status).in_(list(statuses)))
            if after is not None:
                created, job_id = after
                query = query.where(
                    or_(
                        col(JobRow.created_at) < created,
                        and_(col(JobRow.created_at) == created, col(JobRow.job_id) < job_id),
                    )
                )
            query = query.order_by(col(JobRow.created_at).desc(), col(JobRow.job_id).desc()).limit(limit)
            jobs = list(session.exec(query).all())
            return [JobRecord(job, self._results(session, job.job_id)) for job in jobs]

    def append_event(
        self,
        job_id: str,
        *,
        status: int,
        status_text: str,
        exit_code: int | None,
        out_of_memory: bool,
        results: Sequence[NewResult],
        now: datetime,
    ) -> tuple[JobEventRow | None, JobRecord] | None:
        """Records a status change; answers None for an unknown job. No event is recorded (the
        answer's event is None) when the job has already ended, since a terminal status is final
        whatever arrives late, or when nothing changes: an engine that is re-attached to repeats
        the job's current status."""
        with self._session() as session:
            job = self._lock_job(session, job_id)
            if job is None:
                return None
            if job.status in TERMINAL_STATUSES or (
                job.status == status and job.status_text == status_text and not results
            ):
                return None, JobRecord(job, self._results(session, job_id))
            job.sequence += 1
            job.status = status
            job.status_text = status_text
            job.updated_at = now
            if exit_code is not None:
                job.exit_code = exit_code
            job.out_of_memory = job.out_of_memory or out_of_memory
            if status in TERMINAL_STATUSES:
                job.finished_at = now
            event = JobEventRow(
                job_id=job_id,
                sequence=job.sequence,
                status=status,
                status_text=status_text,
                exit_code=exit_code,
                out_of_memory=out_of_memory,
                created_at=now,
            )
            session.add(job)
            session.add(event)
            for result in results:
                session.add(ResultRow(job_id=job_id, **result.__dict__))
            session.commit()
            # Results only matter (and only exist) once the job has ended.
            terminal = status in TERMINAL_STATUSES
            return event, JobRecord(job, self._results(session, job_id) if terminal else [])

    def append_log(
        self, job_id: str, *, stream: int, data: bytes, now: datetime, limit_bytes: int
    ) -> LogRow | None:
        """Keeps a piece of the job's live log, up to limit_bytes per job; past the limit a single
        notice is kept instead (the whole log is still published with the results)."""
        with self._session() as session:
            job = self._lock_job(session, job_id)
            if job is None or job.log_bytes > limit_bytes:
                return None
            if job.log_bytes + len(data) > limit_bytes:
                data = (
                    f"[c2d] live log truncated at {limit_bytes} bytes; "
                    "the whole log is published with the job's results\n"
                ).encode()
                job.log_bytes = limit_bytes + 1
                stream = 3  # LOG_STREAM_SYSTEM
            else:
                job.log_bytes += len(data)
            job.log_sequence += 1
            row = LogRow(job_id=job_id, sequence=job.log_sequence, stream=stream, data=data, created_at=now)
            session.add(job)
            session.add(row)
            session.commit()
            return row

    def get_logs(self, job_id: str, after_sequence: int = 0) -> list[LogRow]:
        with self._session() as session:
            return list(
                session.exec(
                    select(LogRow)
                    .where(LogRow.job_id == job_id, LogRow.sequence > after_sequence)
                    .order_by(col(LogRow.sequence))
                ).all()
            )

    def assign_engine(self, job_id: str, engine: str) -> str | None:
        """Gives the job to engine unless it was given to one already; answers the job's engine
        (None for an unknown job). Atomic: of two operators racing, one choice wins."""
        with self._session() as session:
            session.execute(
                update(JobRow)
                .where(col(JobRow.job_id) == job_id, col(JobRow.engine).is_(None))
                .values(engine=engine)
            )
            session.commit()
            job = session.get(JobRow, job_id)
            return None if job is None else job.engine

    def count_by_status(self) -> dict[int, int]:
        with self._session() as session:
            rows = session.exec(select(JobRow.status, func.count()).group_by(col(JobRow.status))).all()
            return {int(status): int(count) for status, count in rows}

    def unfinished_jobs(self) -> list[JobRow]:
        with self._session() as session:
            return list(
                session.exec(
                    select(JobRow)
                    .where(col(JobRow.status).not_in([int(s) for s in TERMINAL_STATUSES]))
                    .order_by(col(JobRow.created_at))
                ).all()
            )
