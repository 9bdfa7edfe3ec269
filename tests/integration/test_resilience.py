"""What the review found about lifecycles: streams end on shutdown, a failed write does not strand
a job, concurrent writers get distinct sequence numbers, the disk quota covers captured output,
and an engine starts with a clean work folder."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from sqlalchemy.exc import OperationalError

from c2d.provider.v1 import request_response_pb2 as pb
from c2d_common.status import JobStatus
from c2d_common.timestamps import utcnow
from engine_svc.config import EngineSettings
from engine_svc.domain.model import Environment
from engine_svc.infra.local_backend import LocalBackend, LocalBackendSettings
from operator_svc.infra.database import make_engine, migrate
from operator_svc.infra.job_store import JobStore
from tests.conftest import requires_bwrap
from tests.harness import CONSUMER, running_suite
from tests.integration import jobs

MiB = 1024 * 1024


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    path.write_text("a\n1\n")
    return path


@requires_bwrap
async def test_watch_ends_normally_when_the_operator_shuts_down(tmp_path: Path, data_file: Path) -> None:
    async with running_suite(tmp_path / "suite") as suite:
        did = await jobs.publish_dataset(suite, [data_file])
        started = await jobs.start_raw(suite, [did], "import time; time.sleep(600)")
        await jobs.wait_for_status(suite, started.job_id, JobStatus.RUNNING)
        watch = suite.compute.Watch(pb.WatchRequest(consumer_address=CONSUMER, job_id=started.job_id))
        messages = aiter(watch)
        first = await anext(messages)
        assert first.event.status == JobStatus.RUNNING
        stopping = asyncio.create_task(suite.operator.stop())
        # The stream ends cleanly (the client resumes with after_sequence elsewhere), rather than
        # being cancelled when the grace period runs out.
        rest = [message async for message in messages]
        assert rest == []
        assert await watch.code() == grpc.StatusCode.OK
        await stopping


@requires_bwrap
async def test_a_failed_database_write_does_not_strand_the_job(tmp_path: Path, data_file: Path) -> None:
    async with running_suite(tmp_path / "suite") as suite:
        did = await jobs.publish_dataset(suite, [data_file])
        store = suite.registry.store
        original = store.append_event_in
        failures = {"left": 1}

        def flaky_append_event(connection, job_id: str, **kwargs: object):  # type: ignore[no-untyped-def]
            if kwargs.get("status") == JobStatus.RUNNING and failures["left"]:
                failures["left"] -= 1
                raise OperationalError("INSERT", {}, Exception("database is away"))
            return original(connection, job_id, **kwargs)  # type: ignore[arg-type]

        store.append_event_in = flaky_append_event  # type: ignore[method-assign]
        started = await jobs.start_raw(suite, [did], "import time; time.sleep(1); print('done')")
        job = await jobs.wait_terminal(suite, started.job_id)
        assert failures["left"] == 0, "the failure was never injected"
        assert job.status == JobStatus.FINISHED, job.status_text
        history = (await jobs.details(suite, started.job_id)).history
        assert [e.sequence for e in history] == list(range(1, len(history) + 1))


def _hammer(store: JobStore, job_id: str) -> list[str]:
    errors: list[str] = []

    def work(worker: int) -> None:
        for index in range(25):
            try:
                store.append_event(
                    job_id,
                    status=20 + (index % 2) * 10,
                    status_text=f"{worker}-{index}",
                    exit_code=None,
                    out_of_memory=False,
                    results=[],
                    now=utcnow(),
                )
            except Exception as exc:
                errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_concurrent_writers_get_distinct_sequence_numbers(tmp_path: Path, backend: str) -> None:
    if backend == "postgres":
        from tests.integration.fixtures_pg import fresh_database

        context = fresh_database()
    else:
        context = None
    url = f"sqlite:///{tmp_path}/jobs.db"
    if context is not None:
        try:
            url = context.__enter__()
        except Exception as exc:
            pytest.skip(f"PostgreSQL is unreachable: {exc}")
    try:
        engine = make_engine(url)
        migrate(engine)
        store = JobStore(engine)
        job_id = "b" * 32
        store.create_job(
            job_id=job_id,
            owner="0x" + "1" * 40,
            request_id=None,
            spec=b"x",
            dataset_dids=[],
            algorithm_did="",
            environment_id="",
            status_text="queued",
            now=utcnow(),
        )
        assert _hammer(store, job_id) == []
        record = store.get_job(job_id)
        assert record is not None and record.job.sequence == 1 + 6 * 25
        assert [e.sequence for e in store.get_events(job_id)] == list(range(1, 2 + 6 * 25))
        engine.dispose()
    finally:
        if context is not None:
            context.__exit__(None, None, None)


TINY_DISK = Environment(
    id="local-tiny-disk",
    description="1 MiB disk",
    cpus=1.0,
    memory_bytes=1024 * MiB,
    disk_bytes=1 * MiB,
    max_duration_seconds=60,
)

CHATTY = r"""
open("/data/outputs/result.txt", "w").write("partial")
import sys
for _ in range(64):
    sys.stdout.write("x" * (64 * 1024))
sys.stdout.flush()
"""


@requires_bwrap
async def test_captured_output_counts_against_the_disk_quota(tmp_path: Path, data_file: Path) -> None:
    settings = replace(EngineSettings(), environments=(TINY_DISK,))
    async with running_suite(tmp_path / "suite", engine_settings=settings) as suite:
        did = await jobs.publish_dataset(suite, [data_file])
        job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], CHATTY)).job_id)
        assert job.status == JobStatus.DISK_QUOTA_EXCEEDED, job.status_text
        # No output is published past the quota, and the kept log stays within it.
        assert not jobs.results_by_name(job, jobs.OUTPUT)
        logs = jobs.results_by_name(job, jobs.LOG)
        assert sum(r.size for r in logs.values()) <= TINY_DISK.disk_bytes


SMALL_DISK = Environment(
    id="local-small-disk",
    description="64 MiB disk",
    cpus=1.0,
    memory_bytes=1024 * MiB,
    disk_bytes=64 * MiB,
    max_duration_seconds=120,
)

# Many files, each far under the per-file limit (RLIMIT_FSIZE is the whole quota), together 2 GiB;
# then it sleeps: only a quota held while it runs ends it before its time is up.
MANY_FILES = r"""
import time
for index in range(256):
    with open(f"/data/outputs/part-{index:03d}.bin", "wb") as handle:
        handle.write(b"\1" * (8 << 20))
time.sleep(600)
"""


@requires_bwrap
async def test_many_files_under_the_file_limit_are_stopped_while_the_algorithm_runs(
    tmp_path: Path, data_file: Path
) -> None:
    settings = replace(EngineSettings(), environments=(SMALL_DISK,))
    async with running_suite(tmp_path / "suite", engine_settings=settings) as suite:
        did = await jobs.publish_dataset(suite, [data_file])
        started = await jobs.start_raw(suite, [did], MANY_FILES)
        outputs = suite.root / "work" / started.job_id / "data" / "outputs"
        largest = 0
        async with asyncio.timeout(60):  # the algorithm alone would take 120 s
            while not JobStatus((await jobs.details(suite, started.job_id)).job.status).is_terminal:
                if outputs.is_dir():
                    with contextlib.suppress(OSError):
                        largest = max(largest, sum(f.stat().st_size for f in outputs.iterdir()))
                await asyncio.sleep(0.05)
        job = (await jobs.details(suite, started.job_id)).job
        assert job.status == JobStatus.DISK_QUOTA_EXCEEDED, job.status_text
    # Stopped within one measurement of the limit: never the 2 GiB it would have written.
    assert largest < SMALL_DISK.disk_bytes + 512 * MiB, largest


def test_an_engine_starts_with_a_clean_work_folder(tmp_path: Path) -> None:
    leftover = tmp_path / "work" / ("c" * 32) / "data" / "inputs"
    leftover.mkdir(parents=True)
    (leftover / "0").write_text("a dataset copy from an engine that died")
    LocalBackend(LocalBackendSettings(work_dir=tmp_path / "work", results_dir=tmp_path / "results"))
    assert list((tmp_path / "work").iterdir()) == []


@requires_bwrap
async def test_an_input_url_cannot_reach_this_machines_own_services(tmp_path: Path) -> None:
    import http.server

    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"internal-admin-token=s3cr3t\n")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        async with running_suite(tmp_path / "suite") as suite:
            url = f"http://127.0.0.1:{server.server_address[1]}/admin"
            did = await jobs.publish_dataset(suite, [jobs.url_entry(url)])
            job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], "print(1)")).job_id)
            assert job.status == JobStatus.DATA_PROVISIONING_FAILED
            assert "public" in job.status_text and "127.0.0.1" not in job.status_text
            assert requests == []  # never contacted
    finally:
        server.shutdown()
        server.server_close()
