"""The operator's jobs schema. Alembic migrations (infra/migrations) create and evolve it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "request_id", name="uq_jobs_owner_request_id"),
        Index("ix_jobs_owner_created", "owner", "created_at", "job_id"),
        Index("ix_jobs_status", "status"),
    )

    job_id: str = Field(primary_key=True, max_length=32)
    owner: str = Field(max_length=42)
    # Null when the client sent none; the unique constraint then does not apply.
    request_id: str | None = Field(default=None, max_length=128)
    status: int
    status_text: str = ""
    # c2d.common.v1.JobSpec, serialized: the operator stores it but never looks inside.
    spec: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    dataset_dids: str = ""  # JSON list, for display
    algorithm_did: str = ""
    environment_id: str = ""
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    exit_code: int | None = None
    out_of_memory: bool = False
    sequence: int = 0
    log_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    # The engine the job was given to (its address); set once, then the job only ever runs there.
    engine: str | None = Field(default=None, max_length=255)
    log_sequence: int = 0
    # How far the job's progress on its engine is stored: the engine's run of it and the position
    # of the last status change or log piece recorded (see engine_svc/domain/runs.py).
    progress_run_id: str | None = Field(default=None, max_length=32)
    progress_position: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )


class JobEventRow(SQLModel, table=True):
    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "sequence", name="uq_job_events_job_sequence"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.job_id", max_length=32)
    sequence: int
    status: int
    status_text: str = ""
    exit_code: int | None = None
    out_of_memory: bool = False
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class ResultRow(SQLModel, table=True):
    __tablename__ = "job_results"
    __table_args__ = (UniqueConstraint("job_id", "kind", "name", name="uq_job_results_name"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.job_id", max_length=32, index=True)
    name: str
    kind: int
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    location: str


class LogRow(SQLModel, table=True):
    __tablename__ = "job_logs"
    __table_args__ = (UniqueConstraint("job_id", "sequence", name="uq_job_logs_job_sequence"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.job_id", max_length=32)
    sequence: int
    stream: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
