"""The operator on PostgreSQL, for real: a fresh database per test, migrated at start; a whole job through
the suite; what is persisted, read back by SQL and by a new operator after a restart."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from google.protobuf import struct_pb2
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from c2d.common.v1 import job_pb2
from c2d.operator.v1 import request_response_pb2 as opb
from c2d.operator.v1 import service_pb2_grpc as operator_grpc
from c2d.provider.v1 import request_response_pb2 as pb
from c2d_common.server import ServiceServer, insecure_channel
from c2d_common.status import TERMINAL_STATUSES, JobStatus
from operator_svc.config import OperatorSettings
from operator_svc.domain.registry import JobRegistry
from operator_svc.infra import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from operator_svc.infra.database import alembic_config, make_engine, migrate
from operator_svc.server import build_operator
from tests.conftest import requires_bwrap
from tests.harness import CONSUMER, PUBLISHER, Suite, running_suite
from tests.integration.fixtures_pg import database_exists, fresh_database

pytestmark = pytest.mark.postgres

T = 30
JOB_TIMEOUT = 90
DATA = "a,b\n1,2\n3,4\n"
ALGORITHM = (
    b"import json, os, time\n"
    b"print('hello from the algorithm', flush=True)\n"
    b"time.sleep(float(json.load(open('/data/inputs/algoCustomData.json')).get('sleep', 0)))\n"
    b"did = json.loads(os.environ['DIDS'])[0]\n"
    b"open('/data/outputs/out.txt', 'w').write(open(f'/data/inputs/{did}/0').read().upper())\n"
    b"open('/data/logs/note.txt', 'w').write('a note')\n"
    b"print('goodbye', flush=True)\n"
)
FINISHED_HISTORY = [
    JobStatus.QUEUED,
    JobStatus.STARTED,
    JobStatus.CONFIGURING,
    JobStatus.PROVISIONING_SUCCEEDED,
    JobStatus.RUNNING,
    JobStatus.PUBLISHING,
    JobStatus.FINISHED,
]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url
    assert not database_exists(make_url(url).database or ""), "the test database was not dropped"


# --- helpers ----------------------------------------------------------------------------------------


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


async def publish_dataset(suite: Suite, root: Path) -> str:
    data = root / "data.csv"
    data.write_text(DATA)
    ddo = {
        "metadata": {"name": "data", "type": "dataset"},
        "services": [
            {"type": "compute", "files": [{"url": data.as_uri()}], "compute": {"allowRawAlgorithm": True}}
        ],
    }
    request = pb.PublishAssetRequest(publisher_address=PUBLISHER, ddo=struct(ddo))
    return (await suite.assets.PublishAsset(request, timeout=T)).did


async def start(
    suite: Suite, did: str, sleep: float = 0, request_id: str = "", consumer: str = CONSUMER
) -> str:
    request = pb.StartRequest(
        consumer_address=consumer,
        dataset_did=did,
        raw_algorithm=pb.RawAlgorithm(code=ALGORITHM),
        algorithm_parameters=struct({"sleep": sleep}),
        request_id=request_id,
    )
    return (await suite.compute.Start(request, timeout=T)).job_id


async def wait_terminal(suite: Suite, job_id: str) -> pb.GetJobDetailsResponse:
    async with asyncio.timeout(JOB_TIMEOUT):
        async for message in suite.compute.Watch(pb.WatchRequest(consumer_address=CONSUMER, job_id=job_id)):
            if message.event.status in TERMINAL_STATUSES:
                break
    return await suite.compute.GetJobDetails(
        pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id=job_id)
    )


async def operator_terminal(operator: operator_grpc.OperatorServiceStub, job_id: str) -> opb.GetJobResponse:
    async with asyncio.timeout(JOB_TIMEOUT):
        async for message in operator.WatchJob(opb.WatchJobRequest(job_id=job_id)):
            if message.event.status in TERMINAL_STATUSES:
                break
    return await operator.GetJob(opb.GetJobRequest(job_id=job_id), timeout=T)


def head_revision(url: str) -> str:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head() or ""


def schema_differences(engine: sa.Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


class SecondOperator:
    """A new operator process's worth of objects, built on the same database as the suite's."""

    def __init__(self, url: str, engine_port: int):
        self.settings = OperatorSettings(
            listen="127.0.0.1:0",
            database_url=url,
            engine_addresses=(f"127.0.0.1:{engine_port}",),
            engine_retry_seconds=5,
        )
        self.server: ServiceServer | None = None
        self.registry: JobRegistry | None = None
        self.channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> tuple[operator_grpc.OperatorServiceStub, JobRegistry]:
        self.server, self.registry = await build_operator(self.settings)
        port = await self.server.start()
        self.channel = insecure_channel(f"127.0.0.1:{port}")
        return operator_grpc.OperatorServiceStub(self.channel), self.registry

    async def __aexit__(self, *_exc: object) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.server is not None:
            await self.server.stop()


# --- tests ------------------------------------------------------------------------------------------


def test_migrations_on_an_empty_database_give_the_model_schema(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        migrate(engine)
        migrate(engine)  # at every start: the second time changes nothing
        assert schema_differences(engine) == []
        with engine.connect() as connection:
            version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        assert version == [head_revision(pg_url)]
    finally:
        engine.dispose()


@requires_bwrap
async def test_a_job_runs_to_finished_and_everything_is_persisted(pg_url: str, tmp_path: Path) -> None:
    async with running_suite(tmp_path, database_url=pg_url) as suite:
        did = await publish_dataset(suite, tmp_path)
        job_id = await start(suite, did)
        details = await wait_terminal(suite, job_id)
        job = details.job
        assert job.status == JobStatus.FINISHED, job.status_text
        assert job.exit_code == 0
        assert [e.status for e in details.history] == FINISHED_HISTORY
        assert [e.sequence for e in details.history] == list(range(1, len(FINISHED_HISTORY) + 1))
        assert job.sequence == len(FINISHED_HISTORY)
        chunks = [
            m
            async for m in suite.compute.GetResult(
                pb.GetResultRequest(consumer_address=CONSUMER, job_id=job_id, name="out.txt")
            )
        ]
        assert b"".join(c.data for c in chunks) == DATA.upper().encode()
        live_log = b"".join(
            [
                m.chunk.data
                async for m in suite.compute.GetLogs(
                    pb.GetLogsRequest(consumer_address=CONSUMER, job_id=job_id)
                )
            ]
        )
        assert b"hello from the algorithm" in live_log

    # The suite is gone: what is left is what PostgreSQL kept.
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as db:
            row = (
                db.execute(sa.text("SELECT * FROM jobs WHERE job_id = :id"), {"id": job_id}).mappings().one()
            )
            assert row["owner"] == CONSUMER
            assert row["status"] == JobStatus.FINISHED
            assert row["exit_code"] == 0
            assert row["out_of_memory"] is False
            assert row["sequence"] == len(FINISHED_HISTORY)
            assert row["created_at"].tzinfo is not None
            assert row["created_at"] <= row["updated_at"] == row["finished_at"]
            assert job_pb2.JobSpec.FromString(row["spec"]).datasets[0].did == did

            events = db.execute(
                sa.text(
                    "SELECT sequence, status, created_at FROM job_events WHERE job_id = :id ORDER BY sequence"
                ),
                {"id": job_id},
            ).all()
            assert [e.status for e in events] == FINISHED_HISTORY
            assert [e.sequence for e in events] == list(range(1, len(FINISHED_HISTORY) + 1))
            times = [e.created_at for e in events]
            assert times == sorted(times)

            results = db.execute(
                sa.text("SELECT name, kind, size, sha256, location FROM job_results WHERE job_id = :id"),
                {"id": job_id},
            ).all()
            by_name = {r.name: r for r in results}
            assert by_name["out.txt"].kind == job_pb2.RESULT_KIND_OUTPUT
            assert by_name["out.txt"].size == len(DATA)
            assert by_name["out.txt"].location.startswith("file://")
            assert by_name["algorithm-logs/note.txt"].kind == job_pb2.RESULT_KIND_LOG
            assert {r.name for r in results} == {r.name for r in job.results}

            logs = db.execute(
                sa.text("SELECT sequence, data FROM job_logs WHERE job_id = :id ORDER BY sequence"),
                {"id": job_id},
            ).all()
            assert [entry.sequence for entry in logs] == list(range(1, len(logs) + 1))
            assert b"hello from the algorithm" in b"".join(bytes(entry.data) for entry in logs)

            version = db.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
            assert version == [head_revision(pg_url)]
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


@requires_bwrap
async def test_a_new_operator_on_the_same_database_reads_the_finished_job_back(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_suite(tmp_path, database_url=pg_url) as suite:
        did = await publish_dataset(suite, tmp_path)
        job_id = await start(suite, did)
        assert (await wait_terminal(suite, job_id)).job.status == JobStatus.FINISHED
        async with insecure_channel(f"127.0.0.1:{suite.operator.port}") as channel:
            first = operator_grpc.OperatorServiceStub(channel)
            before = await first.GetJob(opb.GetJobRequest(job_id=job_id), timeout=T)
            listed_before = await first.ListJobs(opb.ListJobsRequest(owner=CONSUMER), timeout=T)
            logs_before = [m async for m in first.GetJobLogs(opb.GetJobLogsRequest(job_id=job_id))]

        await suite.operator.stop()

        async with SecondOperator(pg_url, suite.engine.port) as (second, registry):
            assert await registry.resume_unfinished() == 0  # the job ended: nothing to carry on
            after = await second.GetJob(opb.GetJobRequest(job_id=job_id), timeout=T)
            assert after == before
            assert after.job.status == JobStatus.FINISHED
            assert [e.status for e in after.history] == FINISHED_HISTORY
            assert {r.name for r in after.job.results} >= {"out.txt", "algorithm.stdout.log"}
            assert await second.ListJobs(opb.ListJobsRequest(owner=CONSUMER), timeout=T) == listed_before
            assert [m async for m in second.GetJobLogs(opb.GetJobLogsRequest(job_id=job_id))] == logs_before
            # A finished job's Watch is its last event, then the end.
            watched = [m async for m in second.WatchJob(opb.WatchJobRequest(job_id=job_id), timeout=T)]
            assert [m.event.status for m in watched] == [JobStatus.FINISHED]
            assert watched[0].job == before.job


@requires_bwrap
async def test_a_new_operator_carries_on_a_job_that_was_running(pg_url: str, tmp_path: Path) -> None:
    async with running_suite(tmp_path, database_url=pg_url) as suite:
        did = await publish_dataset(suite, tmp_path)
        job_id = await start(suite, did, sleep=4)
        watch = suite.compute.Watch(pb.WatchRequest(consumer_address=CONSUMER, job_id=job_id))
        async with asyncio.timeout(JOB_TIMEOUT):
            async for message in watch:
                if message.event.status == JobStatus.RUNNING:
                    break
        watch.cancel()

        await suite.operator.stop()  # the engine goes on running the job

        async with SecondOperator(pg_url, suite.engine.port) as (second, registry):
            assert await registry.resume_unfinished() == 1
            final = await operator_terminal(second, job_id)
            assert final.job.status == JobStatus.FINISHED, final.job.status_text
            assert final.job.exit_code == 0
            assert "out.txt" in {r.name for r in final.job.results}
            sequences = [e.sequence for e in final.history]
            assert sequences == list(range(1, len(sequences) + 1))
            statuses = [e.status for e in final.history]
            assert statuses[:5] == FINISHED_HISTORY[:5]  # up to RUNNING, recorded by the first operator
            assert statuses[-1] == JobStatus.FINISHED
            assert set(statuses) <= set(FINISHED_HISTORY)


@requires_bwrap
async def test_reattaching_to_a_running_job_records_no_repeated_status(pg_url: str, tmp_path: Path) -> None:
    async with running_suite(tmp_path, database_url=pg_url) as suite:
        did = await publish_dataset(suite, tmp_path)
        job_id = await start(suite, did, sleep=30)
        watch = suite.compute.Watch(pb.WatchRequest(consumer_address=CONSUMER, job_id=job_id))
        async with asyncio.timeout(JOB_TIMEOUT):
            async for message in watch:
                if message.event.status == JobStatus.RUNNING:
                    break
        watch.cancel()
        await suite.operator.stop()

        async with SecondOperator(pg_url, suite.engine.port) as (second, registry):
            assert await registry.resume_unfinished() == 1
            # Whatever the new operator records first after RUNNING (sequence 5).
            async with asyncio.timeout(JOB_TIMEOUT):
                async for _ in second.WatchJob(opb.WatchJobRequest(job_id=job_id, after_sequence=5)):
                    break
            await second.StopJob(opb.StopJobRequest(job_id=job_id), timeout=120)
            history = list((await second.GetJob(opb.GetJobRequest(job_id=job_id), timeout=T)).history)
            assert history[-1].status in TERMINAL_STATUSES
            repeats = [
                (a.sequence, b.sequence, JobStatus(b.status).name)
                for a, b in itertools.pairwise(history)
                if a.status == b.status
            ]
            assert repeats == []


@requires_bwrap
async def test_list_pages_and_filters_on_postgres(pg_url: str, tmp_path: Path) -> None:
    async with running_suite(tmp_path, database_url=pg_url) as suite:
        did = await publish_dataset(suite, tmp_path)
        created = [await start(suite, did) for _ in range(5)]
        for job_id in created:
            await wait_terminal(suite, job_id)
        seen: list[str] = []
        token = ""
        while True:
            page = await suite.compute.List(
                pb.ListRequest(consumer_address=CONSUMER, page_size=2, page_token=token), timeout=T
            )
            seen += [j.job_id for j in page.jobs]
            token = page.next_page_token
            if not token:
                break
        assert seen == list(reversed(created))
        finished = await suite.compute.List(
            pb.ListRequest(consumer_address=CONSUMER, statuses=[JobStatus.FINISHED]), timeout=T
        )
        assert [j.job_id for j in finished.jobs] == list(reversed(created))
        running = await suite.compute.List(
            pb.ListRequest(consumer_address=CONSUMER, statuses=[JobStatus.RUNNING]), timeout=T
        )
        assert list(running.jobs) == []


@requires_bwrap
async def test_concurrent_retries_of_one_start_are_one_job_on_postgres(pg_url: str, tmp_path: Path) -> None:
    async with running_suite(tmp_path, database_url=pg_url) as suite:
        did = await publish_dataset(suite, tmp_path)
        job_ids = await asyncio.gather(*(start(suite, did, request_id="same-request") for _ in range(10)))
        assert len(set(job_ids)) == 1
        listed = await suite.compute.List(pb.ListRequest(consumer_address=CONSUMER), timeout=T)
        assert [j.job_id for j in listed.jobs] == [job_ids[0]]
        assert (await wait_terminal(suite, job_ids[0])).job.status == JobStatus.FINISHED


@requires_bwrap
@pytest.mark.parametrize(
    "start_fields",
    [
        pytest.param(
            {"request_id": "retry\x00me"},
            id="nul-in-request-id",
        ),
        pytest.param(
            {"consumer_address": CONSUMER + "\n"},
            id="newline-after-address",
        ),
    ],
)
async def test_start_with_values_postgres_cannot_store_is_invalid_argument(
    pg_url: str, tmp_path: Path, start_fields: dict[str, str]
) -> None:
    async with running_suite(tmp_path, database_url=pg_url) as suite:
        did = await publish_dataset(suite, tmp_path)
        values: dict[str, Any] = {
            "consumer_address": CONSUMER,
            "dataset_did": did,
            "raw_algorithm": pb.RawAlgorithm(code=b"print(1)"),
            **start_fields,
        }
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await suite.compute.Start(pb.StartRequest(**values), timeout=T)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
