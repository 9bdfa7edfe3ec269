"""Every phase has a limit: a stalled download ends the job as a provisioning failure, a hung
algorithm as timed out, a stalled upload as a results upload failure, each within its limit plus a
little, never stuck.

The bounds are correctness bounds, not speed measurements: a job whose phase hits its limit must
have ended MARGIN_SECONDS after the limit at the latest (a few seconds for the other phases'
sandboxes and the clean-up, on a busy machine), where a broken limit would leave it running for
minutes (the default limits are 600 s; a stalled HTTP or S3 client waits 60 s per attempt).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from c2d.common.v1 import job_pb2
from c2d_common.status import JobStatus
from engine_svc.config import EngineSettings
from engine_svc.domain.model import Environment
from engine_svc.infra.local_backend import REMOTE_CLEANUP_WAIT_SECONDS
from tests.conftest import requires_bwrap
from tests.harness import Suite, running_suite
from tests.integration import jobs
from tests.servers.s3 import ACCESS_KEY, REGION, SECRET_KEY
from tests.servers.silent import silent_server
from tests.servers.storage_suite import storage_suite

pytestmark = requires_bwrap

QUICK = Environment(
    id="local-quick",
    description="2 s at most",
    cpus=1.0,
    memory_bytes=1024**3,
    disk_bytes=64 * 1024**2,
    max_duration_seconds=2,
)
LIMIT_SECONDS = 2
MARGIN_SECONDS = 6


async def run_within_limit(suite: Suite, did: str, code: str, margin: float = MARGIN_SECONDS) -> job_pb2.Job:
    """Starts the job and follows it to its end, which must come within the limit plus the margin."""
    began = time.monotonic()
    job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], code)).job_id)
    elapsed = time.monotonic() - began
    assert elapsed <= LIMIT_SECONDS + margin, (
        f"the job ended {elapsed:.1f} s after its start, past its {LIMIT_SECONDS} s limit "
        f"plus {margin:.0f} s: {job.status_text}"
    )
    return job


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
    settings = replace(
        EngineSettings(), configure_timeout_seconds=LIMIT_SECONDS, allow_private_input_hosts=True
    )
    async with running_suite(tmp_path / "suite", engine_settings=settings) as suite:
        did = await jobs.publish_dataset(suite, [jobs.url_entry(stalling_url)])
        job = await run_within_limit(suite, did, "print(1)")
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
        job = await run_within_limit(suite, did, code)
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
        job = await run_within_limit(suite, did, code)
        assert job.status == JobStatus.ALGORITHM_TIMED_OUT, job.status_text
        outputs = {r.name for r in job.results if r.kind == jobs.OUTPUT}
        assert outputs == {"early.txt"}
        assert not jobs.processes_mentioning(job.job_id)


async def _run_with_a_stalled_store(tmp_path: Path, margin: float) -> job_pb2.Job:
    """A job whose results go to an S3 endpoint that accepts the connection and never answers:
    boto3 would wait 60 s per attempt, three attempts; the publish limit ends it."""
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    settings = replace(EngineSettings(), publish_timeout_seconds=LIMIT_SECONDS)
    with silent_server() as stalled:
        env = {
            "C2D_RESULT_STORE": "s3://c2d-results",
            "C2D_S3_ENDPOINT_URL": stalled.url,
            "C2D_S3_REGION": REGION,
            "C2D_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "C2D_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        async with storage_suite(tmp_path / "suite", env, settings) as suite:
            did = await jobs.publish_dataset(suite, [data])
            code = "open('/data/outputs/out.txt', 'w').write('never stored')\n"
            try:
                job = await run_within_limit(suite, did, code, margin)
            finally:
                # Whatever still waits on the endpoint (the clean-up's S3 calls) fails at once.
                stalled.close()
            assert stalled.accepted >= 1, "the upload never reached the stalled endpoint"
            assert job.status == JobStatus.RESULTS_UPLOAD_FAILED, job.status_text
            assert f"longer than {LIMIT_SECONDS} s" in job.status_text
            assert job.exit_code == 0  # the algorithm itself succeeded
            assert not job.results
            assert not jobs.processes_mentioning(job.job_id)
    return job


async def test_a_stalled_upload_ends_as_results_upload_failed_within_the_publish_limit(
    tmp_path: Path,
) -> None:
    """The job's end waits REMOTE_CLEANUP_WAIT_SECONDS at most for the removal of what it may
    have stored (which goes on behind it), not for a store that never answers."""
    await _run_with_a_stalled_store(tmp_path, REMOTE_CLEANUP_WAIT_SECONDS + MARGIN_SECONDS)
