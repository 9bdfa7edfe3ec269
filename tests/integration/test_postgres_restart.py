"""PostgreSQL down while jobs change phase: the operator keeps trying, and once the database is back
no job, event or result is lost.

The server is stopped while the jobs are running and kept down until the engine has run every job
to its end, so each job's last status changes (publishing, finished) had to be recorded during the
outage; then it is started again. It is started again in any case, whatever the test did.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg2 import sql
from sqlalchemy.engine import make_url

from c2d_common.status import JobStatus
from tests.conftest import POSTGRES_URL, requires_bwrap
from tests.harness import Suite, running_suite
from tests.integration import jobs
from tests.integration.fixtures_pg import _admin_connection

pytestmark = [requires_bwrap, pytest.mark.postgres]

JOBS = 4  # two at a time (the engine's default slots): two run during the outage from their start


def _cluster_command() -> list[str] | None:
    """pg_ctlcluster for the server at POSTGRES_URL (without the action), when it is this machine's."""
    if make_url(POSTGRES_URL).host not in ("127.0.0.1", "localhost") or shutil.which("pg_ctlcluster") is None:
        return None
    versions = sorted(Path("/etc/postgresql").glob("*/main"), key=lambda p: int(p.parent.name))
    if not versions:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].parent.name, "main"]


def _cluster(command: list[str], action: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, action, *options], capture_output=True, text=True, timeout=120)


async def _ended_in_engine(suite: Suite, job_id: str, seconds: float = 60) -> None:
    for _ in range(int(seconds / 0.05)):
        run = suite.runner.runs.get(job_id)
        if run is not None and run.finished:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the engine did not end job {job_id} within {seconds} s")


@contextlib.contextmanager
def database_across_restarts() -> Iterator[str]:
    """A new database (its URL), dropped afterwards through a connection made then: one opened
    before the outage would be dead (fixtures_pg.fresh_database keeps its own open)."""
    name = f"c2d_test_{uuid.uuid4().hex}"
    admin = _admin_connection(POSTGRES_URL)
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = _admin_connection(POSTGRES_URL)
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture
def cluster() -> Iterator[list[str]]:
    """The cluster command; the server is running again after the test, whatever happened."""
    command = _cluster_command()
    if command is None:
        pytest.skip("PostgreSQL is not a local cluster this test can stop and start")
    try:
        yield command
    finally:
        if _cluster(command, "status").returncode != 0:  # 3: not running
            started = _cluster(command, "start")
            assert started.returncode == 0, f"PostgreSQL did not start again: {started.stderr}"


async def test_jobs_survive_postgres_down_while_they_change_phase(tmp_path: Path, cluster: list[str]) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    with database_across_restarts() as url:
        async with running_suite(tmp_path / "suite", database_url=url) as suite:
            did = await jobs.publish_dataset(suite, [data])
            code = "import time\ntime.sleep(1)\nopen('/data/outputs/out.txt', 'w').write('ok')\n"
            started = [await jobs.start_raw(suite, [did], code) for _ in range(JOBS)]
            await jobs.wait_for_status(suite, started[0].job_id, JobStatus.RUNNING)

            stopped = await asyncio.to_thread(_cluster, cluster, "stop", "-m", "fast")
            assert stopped.returncode == 0, stopped.stderr
            down_at = time.time()
            try:
                # The engine runs on without the database: wait until it has ended every job.
                for job in started:
                    await _ended_in_engine(suite, job.job_id)
                assert _cluster(cluster, "status").returncode != 0, "PostgreSQL came back by itself"
            finally:
                starting_at = time.time()
                restarted = await asyncio.to_thread(_cluster, cluster, "start")
            assert restarted.returncode == 0, restarted.stderr

            finals = [await jobs.wait_terminal(suite, job.job_id) for job in started]
            for job in finals:
                assert job.status == JobStatus.FINISHED, job.status_text
                assert [r.name for r in job.results if r.kind == jobs.OUTPUT] == ["out.txt"]
                history = (await jobs.details(suite, job.job_id)).history
                assert [e.sequence for e in history] == list(range(1, len(history) + 1))
                assert history[-1].status == JobStatus.FINISHED
                # Its end happened in the outage, and was stored once the database was back.
                finished_at = history[-1].time.seconds + history[-1].time.nanos / 1e9
                assert finished_at >= starting_at, (down_at, starting_at, finished_at)
            # And the operator takes new work after it.
            after = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], "print(1)")).job_id)
            assert after.status == JobStatus.FINISHED
