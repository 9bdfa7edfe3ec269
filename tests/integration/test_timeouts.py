"""Every phase has a limit: a stalled download ends the job as a provisioning failure, a hung
algorithm as timed out, each within its limit plus a little, never stuck."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from c2d_common.status import JobStatus
from engine_svc.config import EngineSettings
from engine_svc.domain.model import Environment
from tests.conftest import requires_bwrap
from tests.harness import running_suite
from tests.integration import jobs

pytestmark = requires_bwrap

QUICK = Environment(
    id="local-quick",
    description="2 s at most",
    cpus=1.0,
    memory_bytes=1024**3,
    disk_bytes=64 * 1024**2,
    max_duration_seconds=2,
)


@pytest.fixture
def stalling_url() -> Iterator[str]:
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"a,b\n")
            self.wfile.flush()
            release.wait(60)  # then stalls mid-body

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/data.csv"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


async def test_a_stalled_download_ends_as_data_provisioning_failed(tmp_path: Path, stalling_url: str) -> None:
    settings = replace(EngineSettings(), configure_timeout_seconds=2, allow_private_input_hosts=True)
    async with running_suite(tmp_path / "suite", engine_settings=settings) as suite:
        did = await jobs.publish_dataset(suite, [jobs.url_entry(stalling_url)])
        job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], "print(1)")).job_id)
        assert job.status == JobStatus.DATA_PROVISIONING_FAILED
        assert "longer than 2 s" in job.status_text
        assert not jobs.processes_mentioning(job.job_id)


async def test_a_hung_algorithm_ends_as_timed_out(tmp_path: Path) -> None:
    settings = replace(EngineSettings(), environments=(QUICK,))
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    async with running_suite(tmp_path / "suite", engine_settings=settings) as suite:
        did = await jobs.publish_dataset(suite, [data])
        code = "print('waiting', flush=True)\nimport time\ntime.sleep(600)\n"
        job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], code)).job_id)
        assert job.status == JobStatus.ALGORITHM_TIMED_OUT, job.status_text
        assert job.exit_code == 137
        # What it printed before the deadline is still published.
        _, stdout = await jobs.download(suite, job.job_id, "algorithm.stdout.log", jobs.LOG)
        assert stdout == b"waiting\n"
        assert not jobs.processes_mentioning(job.job_id)


async def test_output_written_after_the_deadline_is_not_published(tmp_path: Path) -> None:
    settings = replace(EngineSettings(), environments=(QUICK,))
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    code = (
        "import os, time\n"
        "open('/data/outputs/early.txt', 'w').write('before')\n"
        "if os.fork() == 0:\n"
        "    os.setsid()  # try to outlive the algorithm\n"
        "    time.sleep(3)\n"
        "    open('/data/outputs/late.txt', 'w').write('after')\n"
        "    os._exit(0)\n"
        "time.sleep(600)\n"
    )
    async with running_suite(tmp_path / "suite", engine_settings=settings) as suite:
        did = await jobs.publish_dataset(suite, [data])
        job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], code)).job_id)
        assert job.status == JobStatus.ALGORITHM_TIMED_OUT, job.status_text
        outputs = {r.name for r in job.results if r.kind == jobs.OUTPUT}
        assert outputs == {"early.txt"}
        assert not jobs.processes_mentioning(job.job_id)
