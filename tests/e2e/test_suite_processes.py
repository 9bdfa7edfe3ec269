"""The whole suite as separate processes, driven as a user would: by the `c2d` CLI, and by the Buf
CLI's `buf curl` through server reflection (a gRPC client that is not ours)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from c2d_cli.processes import LocalSuite, local_suite, stop_local_suite
from c2d_common.signing import address_of
from tests.conftest import requires_bwrap

pytestmark = [pytest.mark.e2e, requires_bwrap]

CONSUMER_KEY = "0x" + "e2" * 32
CONSUMER = address_of(CONSUMER_KEY)
SAMPLES = Path(__file__).resolve().parents[2] / "c2d_cli" / "samples"
BUF = shutil.which("buf", path=os.path.dirname(sys.executable)) or shutil.which("buf")


@pytest.fixture
async def suite(tmp_path: Path) -> AsyncIterator[LocalSuite]:
    async with local_suite(tmp_path / "state") as running:
        yield running


def c2d_command(suite: LocalSuite, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "c2d_cli.main",
        "--provider",
        suite.provider_address,
        *args,
    ]


def c2d(
    suite: LocalSuite, *args: str, cwd: Path | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        c2d_command(suite, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "C2D_KEY": CONSUMER_KEY},
    )


def signed(suite: LocalSuite, method: str, body: dict) -> dict:
    """The request with its auth, as `c2d sign` prints it for buf curl users."""
    done = c2d(suite, "sign", method, json.dumps(body))
    assert done.returncode == 0, done.stderr
    request = json.loads(done.stdout)
    assert request["auth"]["signature"].startswith("0x")
    return request


def buf_curl(
    address: str, method: str, body: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    assert BUF is not None, "the Buf CLI (buf-bin) is not installed"
    args = [BUF, "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    if body is not None:
        args += ["-d", json.dumps(body)]
    return subprocess.run(
        [*args, f"http://{address}/{method}"], capture_output=True, text=True, timeout=timeout
    )


def json_stream(text: str) -> list[dict]:
    """buf curl prints one pretty JSON document per streamed message."""
    decoder = json.JSONDecoder()
    items, index = [], 0
    text = text.strip()
    while index < len(text):
        item, end = decoder.raw_decode(text, index)
        items.append(item)
        index = end
        while index < len(text) and text[index].isspace():
            index += 1
    return items


async def test_cli_runs_a_job_end_to_end(suite: LocalSuite, tmp_path: Path) -> None:
    started = c2d(
        suite,
        "start",
        "--dataset",
        str(SAMPLES / "weather.csv"),
        "--algorithm",
        str(SAMPLES / "summarize.py"),
        "--param",
        "group_by=station",
        "--watch",
    )
    assert started.returncode == 0, started.stdout + started.stderr
    job_id = next(line.split()[1] for line in started.stdout.splitlines() if line.startswith("job "))
    assert "FINISHED" in started.stdout
    assert "station=ridge: 60 rows" in started.stdout  # the algorithm's output, followed live

    listed = c2d(suite, "list", "--status", "finished")
    assert listed.returncode == 0 and job_id in listed.stdout

    status = c2d(suite, "status", job_id)
    assert status.returncode == 0
    for name in ("QUEUED", "STARTED", "CONFIGURING", "RUNNING", "PUBLISHING", "FINISHED"):
        assert name in status.stdout

    logs = c2d(suite, "logs", job_id)
    assert "wrote /data/outputs/summary.json" in logs.stdout

    results = c2d(suite, "results", job_id, "-o", str(tmp_path / "out"))
    assert results.returncode == 0, results.stderr
    summary = json.loads((tmp_path / "out" / "outputs" / "summary.json").read_text())
    assert set(summary["groups"]) == {"harbour", "north", "ridge"}
    assert (tmp_path / "out" / "outputs" / "report" / "temperature.txt").exists()
    assert (tmp_path / "out" / "logs" / "algorithm.stdout.log").exists()

    envs = c2d(suite, "envs")
    assert "local-small" in envs.stdout

    unknown = c2d(suite, "status", "0" * 32)
    assert unknown.returncode == 2 and "NOT_FOUND" in unknown.stderr


async def test_cli_publisher_trusts_an_algorithm_and_the_consumer_runs_it(suite: LocalSuite) -> None:
    published = c2d(
        suite, "publish", str(SAMPLES / "summarize.py"), "--type", "algorithm", "--name", "summary"
    )
    assert published.returncode == 0, published.stderr
    algorithm = published.stdout.strip()
    checksums = c2d(suite, "checksums", algorithm)
    assert checksums.returncode == 0, checksums.stderr
    entry = json.loads(checksums.stdout)
    assert entry["did"] == algorithm and len(entry["filesChecksum"]) == 64
    dataset = c2d(
        suite,
        "publish",
        str(SAMPLES / "weather.csv"),
        "--name",
        "w",
        "--no-raw",
        "--trust-algorithm",
        algorithm,
    )
    assert dataset.returncode == 0, dataset.stderr
    did = dataset.stdout.strip()

    raw = c2d(suite, "start", "--dataset", did, "--algorithm", str(SAMPLES / "summarize.py"))
    assert raw.returncode == 2 and "PERMISSION_DENIED" in raw.stderr and "raw algorithms" in raw.stderr
    started = c2d(suite, "start", "--dataset", did, "--algorithm", algorithm, "--watch")
    assert started.returncode == 0 and "FINISHED" in started.stdout, started.stdout + started.stderr

    me = c2d(suite, "address")
    assert CONSUMER in me.stdout and "last nonce accepted here" in me.stdout


async def test_cli_stops_a_running_job(suite: LocalSuite, tmp_path: Path) -> None:
    algorithm = tmp_path / "sleep.py"
    algorithm.write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
    started = c2d(suite, "start", "--dataset", str(SAMPLES / "weather.csv"), "--algorithm", str(algorithm))
    assert started.returncode == 0, started.stderr
    job_id = next(line.split()[1] for line in started.stdout.splitlines() if line.startswith("job "))
    # Follow the live log until the algorithm is running, then stop it.
    follower = subprocess.Popen(
        c2d_command(suite, "logs", "-f", job_id),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "C2D_KEY": CONSUMER_KEY},
    )
    assert follower.stdout is not None
    assert follower.stdout.readline().strip() == "sleeping"
    stopped = c2d(suite, "stop", job_id)
    assert stopped.returncode == 0 and "STOPPED" in stopped.stdout
    assert follower.wait(30) == 0  # the log stream ends with the job
    assert not list((suite.state_dir / "work").glob(f"{job_id}*"))


async def test_buf_curl_through_reflection(suite: LocalSuite) -> None:
    listed = subprocess.run(
        [
            BUF,
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--list-methods",
            f"http://{suite.provider_address}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    for method in (
        "Start",
        "GetJobDetails",
        "Stop",
        "List",
        "Watch",
        "GetResult",
        "GetLogs",
        "GetEnvironments",
    ):
        assert f"c2d.provider.v1.ComputeService/{method}" in listed.stdout
    for service in ("operator", "engine"):
        methods = subprocess.run(
            [
                BUF,
                "curl",
                "--protocol",
                "grpc",
                "--http2-prior-knowledge",
                "--list-methods",
                f"http://{suite.address(service)}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert methods.returncode == 0 and f"c2d.{service}.v1." in methods.stdout

    for address in (suite.provider_address, suite.address("operator"), suite.address("engine")):
        health = buf_curl(address, "grpc.health.v1.Health/Check", {})
        assert json.loads(health.stdout)["status"] == "SERVING"

    dataset = SAMPLES / "weather.csv"
    published = buf_curl(
        suite.provider_address,
        "c2d.provider.v1.AssetService/PublishAsset",
        signed(
            suite,
            "c2d.provider.v1.AssetService/PublishAsset",
            {
                "publisher_address": CONSUMER,
                "ddo": {
                    "metadata": {"name": "weather", "type": "dataset"},
                    "services": [
                        {
                            "type": "compute",
                            "files": [{"url": dataset.as_uri()}],
                            "compute": {"allowRawAlgorithm": True},
                        }
                    ],
                },
            },
        ),
    )
    assert published.returncode == 0, published.stderr
    did = json.loads(published.stdout)["did"]

    code = (
        b"import json, os\n"
        b"print('dids', json.loads(os.environ['DIDS']))\n"
        b"open('/data/outputs/hi.txt', 'w').write('hi')\n"
    )
    started = buf_curl(
        suite.provider_address,
        "c2d.provider.v1.ComputeService/Start",
        signed(
            suite,
            "c2d.provider.v1.ComputeService/Start",
            {
                "consumer_address": CONSUMER,
                "dataset_did": did,
                "raw_algorithm": {"code": base64.b64encode(code).decode()},
            },
        ),
    )
    assert started.returncode == 0, started.stderr
    job_id = json.loads(started.stdout)["jobId"]

    watched = buf_curl(
        suite.provider_address,
        "c2d.provider.v1.ComputeService/Watch",
        signed(
            suite, "c2d.provider.v1.ComputeService/Watch", {"consumer_address": CONSUMER, "job_id": job_id}
        ),
    )
    assert watched.returncode == 0, watched.stderr
    events = json_stream(watched.stdout)
    assert events[-1]["event"]["status"] == "JOB_STATUS_FINISHED"
    sequences = [int(e["event"]["sequence"]) for e in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)

    result = buf_curl(
        suite.provider_address,
        "c2d.provider.v1.ComputeService/GetResult",
        signed(
            suite,
            "c2d.provider.v1.ComputeService/GetResult",
            {"consumer_address": CONSUMER, "job_id": job_id, "name": "hi.txt"},
        ),
    )
    chunks = json_stream(result.stdout)
    assert base64.b64decode(chunks[0]["data"]) == b"hi"
    assert chunks[0]["file"]["sha256"] == "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"

    bad = buf_curl(
        suite.provider_address,
        "c2d.provider.v1.ComputeService/GetJobDetails",
        signed(
            suite,
            "c2d.provider.v1.ComputeService/GetJobDetails",
            {"consumer_address": CONSUMER, "job_id": "not-a-job"},
        ),
    )
    assert bad.returncode != 0 and "invalid_argument" in bad.stderr.lower()


async def test_services_stop_gracefully_on_sigterm(tmp_path: Path) -> None:
    async with local_suite(tmp_path / "state") as suite:
        pass
    # local_suite's exit sent SIGTERM; every service must have exited 0 on its own.
    codes = stop_local_suite(suite)
    assert all(process.returncode == 0 for process in suite.processes.values()), codes
