"""Operator rows to protobuf messages."""

from __future__ import annotations

import json

from c2d.common.v1 import job_pb2
from c2d_common.convert import result_file_proto
from c2d_common.timestamps import to_timestamp
from operator_svc.infra.job_store import JobRecord, StoredEvent, StoredLog


def job_to_proto(record: JobRecord) -> job_pb2.Job:
    job = record.job
    message = job_pb2.Job(
        job_id=job.job_id,
        owner=job.owner,
        status=job.status,  # type: ignore[arg-type]
        status_text=job.status_text,
        dataset_dids=json.loads(job.dataset_dids or "[]"),
        algorithm_did=job.algorithm_did,
        environment_id=job.environment_id,
        created_at=to_timestamp(job.created_at),
        updated_at=to_timestamp(job.updated_at),
        finished_at=to_timestamp(job.finished_at),
        out_of_memory=job.out_of_memory,
        sequence=job.sequence,
        results=[result_file_proto(r) for r in record.results],
    )
    if job.exit_code is not None:
        message.exit_code = job.exit_code
    return message


def event_to_proto(event: StoredEvent) -> job_pb2.JobEvent:
    message = job_pb2.JobEvent(
        job_id=event.job_id,
        sequence=event.sequence,
        status=event.status,  # type: ignore[arg-type]
        status_text=event.status_text,
        time=to_timestamp(event.created_at),
        out_of_memory=event.out_of_memory,
    )
    if event.exit_code is not None:
        message.exit_code = event.exit_code
    return message


def log_to_proto(row: StoredLog) -> job_pb2.LogChunk:
    return job_pb2.LogChunk(
        sequence=row.sequence,
        stream=row.stream,  # type: ignore[arg-type]
        data=row.data,
        time=to_timestamp(row.created_at),
    )
