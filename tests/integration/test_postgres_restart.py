"""PostgreSQL restarted while jobs run: the operator reconnects, and no job, event or result is lost."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from psycopg2 import sql
from sqlalchemy.engine import make_url

from c2d_common.status import JobStatus
from tests.conftest import POSTGRES_URL, requires_bwrap
from tests.harness import running_suite
from tests.integration import jobs
from tests.integration.fixtures_pg import _admin_connection

pytestmark = [requires_bwrap, pytest.mark.postgres]


def _local_cluster() -> list[str] | None:
    """The pg_ctlcluster command that restarts the server at POSTGRES_URL, when it is this machine's."""
    if make_url(POSTGRES_URL).host not in ("127.0.0.1", "localhost") or shutil.which("pg_ctlcluster") is None:
        return None
    versions = sorted(Path("/etc/postgresql").glob("*/main"))
    if not versions:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].parent.name, "main", "restart"]


async def test_jobs_survive_a_postgres_restart(tmp_path: Path) -> None:
    restart = _local_cluster()
    if restart is None:
        pytest.skip("PostgreSQL is not a local cluster this test can restart")
    name = f"c2d_test_{uuid.uuid4().hex}"
    admin = _admin_connection(POSTGRES_URL)
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    try:
        async with running_suite(tmp_path / "suite", database_url=url) as suite:
            did = await jobs.publish_dataset(suite, [data])
            code = "import time\ntime.sleep(3)\nopen('/data/outputs/out.txt', 'w').write('ok')\n"
            started = [await jobs.start_raw(suite, [did], code) for _ in range(4)]
            await jobs.wait_for_status(suite, started[0].job_id, JobStatus.RUNNING)
            result = await asyncio.to_thread(
                subprocess.run, restart, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, result.stderr
            finals = [await jobs.wait_terminal(suite, job.job_id) for job in started]
            for job in finals:
                assert job.status == JobStatus.FINISHED, job.status_text
                assert [r.name for r in job.results if r.kind == jobs.OUTPUT] == ["out.txt"]
                history = (await jobs.details(suite, job.job_id)).history
                assert [e.sequence for e in history] == list(range(1, len(history) + 1))
                assert [e.status for e in history][-1] == JobStatus.FINISHED
            # And the operator takes new work after it.
            after = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], "print(1)")).job_id)
            assert after.status == JobStatus.FINISHED
    finally:
        admin = _admin_connection(POSTGRES_URL)
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()
