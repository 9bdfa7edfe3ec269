"""Storage throughput against the plain tools, each pair measured in the same run, alternating:

1. provisioning: the engine's configure phase (podtools configure in its sandbox) fetching a 1 GiB
   dataset from a local HTTP server, sha256 and size checked, versus `curl -o` of the same file
   from the same server; and podtools' peak memory for it, beyond what it holds for a tiny file;
2. publishing: the engine's publish phase (podtools publish in its sandbox) storing a 1 GiB output
   in S3 (moto's server, a separate process, over HTTP), versus a plain boto3 `upload_file` of the
   same file (timed around the call alone, so imports and start-up count against us only);
3. GetResult: the CLI's downloader (c2d_cli/download.py) fetching a 1 GiB result from the provider
   (the suite as separate processes) and checking its sha256, versus `curl -o` of the same file
   over raw HTTP on loopback.

Run: `.venv/bin/python -m bench.bench_storage` (`--no-write` leaves BENCHMARKS.md alone, `--runs N`,
`--size-mib N`). It prints its figures and rewrites its own section of BENCHMARKS.md. It asserts
nothing about speed: the ratios are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.bench_job_latency import machine, wait_for_quiet_machine, write_section
from c2d.common.v1 import job_pb2
from c2d_cli.client import ProviderClient
from c2d_cli.download import download_result
from c2d_cli.main import dataset_ddo
from c2d_cli.processes import local_suite
from c2d_common.status import JobStatus
from c2d_common.storage import (
    IpfsSettings,
    ResultStoreTarget,
    S3Settings,
    StorageSettings,
    delete_job_results,
)
from engine_svc.config import DEFAULT_ENVIRONMENTS
from engine_svc.domain.model import JobContext
from engine_svc.infra.local_backend import LocalBackend, LocalBackendSettings
from tests.harness import CONSUMER_KEY
from tests.servers.http_files import free_port

ROOT = Path(__file__).resolve().parents[1]
SECTION_TITLE = "## Storage throughput (bench/bench_storage.py)"
PYTHON = sys.executable
MOTO_SERVER = Path(PYTHON).with_name("moto_server")
MiB = 1024 * 1024
DID = "did:op:" + "5e" * 32
ACCESS = {"key": "bench-key", "secret": "bench-secret"}


# The machine's busy fraction (other work) measured just before each run.
BUSY_BEFORE_RUNS: list[float] = []
# sha256 of the whole file by one thread (from the page cache): the floor of any checked transfer.
HASH_SECONDS: list[float] = []


def sha256_seconds(path: Path) -> float:
    digest = hashlib.sha256()
    buffer = bytearray(MiB)
    with path.open("rb", buffering=0) as reader:
        reader.readinto(buffer)  # touch the first page, then time the whole pass
        reader.seek(0)
        began = time.perf_counter()
        while count := reader.readinto(buffer):
            digest.update(memoryview(buffer)[:count])
        return time.perf_counter() - began


@dataclass
class Pair:
    """Seconds per run of ours and of the plain tool, measured alternately."""

    what: str
    ours_label: str
    plain_label: str
    target: float
    ours: list[float] = field(default_factory=list)
    plain: list[float] = field(default_factory=list)

    def ratio(self) -> float:
        # Throughput ratio: ours over the plain tool's (same bytes, so the inverse of the times).
        return statistics.median(self.plain) / statistics.median(self.ours)


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def make_file(path: Path, size: int) -> str:
    """A file of `size` random-looking bytes; answers its sha256."""
    block = os.urandom(64 * MiB)
    digest = hashlib.sha256()
    with path.open("wb") as sink:
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            sink.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


def serve_files(*paths: Path) -> tuple[subprocess.Popen[bytes], list[str]]:
    """The range-capable file server (tests/servers/http_files.py) as a process of its own, so that
    neither tool shares an interpreter with it; answers it and the files' URLs."""
    process = subprocess.Popen(
        [PYTHON, "-m", "tests.servers.http_files", *map(str, paths)], stdout=subprocess.PIPE, cwd=ROOT
    )
    assert process.stdout is not None
    return process, [process.stdout.readline().decode().strip() for _ in paths]


def timed_curl(url: str, destination: Path) -> float:
    os.sync()
    began = time.perf_counter()
    subprocess.run(["curl", "-s", "-f", "-o", str(destination), url], check=True)
    elapsed = time.perf_counter() - began
    destination.unlink()
    return elapsed


async def alternate(
    pairs: list[tuple[Pair, Callable[[], Awaitable[float]]]], runs: int, plain: Callable[[], float]
) -> None:
    """Runs the plain tool and each of ours in turn, `runs` times, rotating which goes first so
    that none always meets a warmer (or dirtier) cache. The pairs share the plain tool's times."""
    steps: list[tuple[str, Pair, Callable[[], Awaitable[float]] | None]] = [
        ("plain", pairs[0][0], None),
        *[("ours", pair, run) for pair, run in pairs],
    ]
    # One round untimed first: the first runs on a fresh VM touch memory (page cache) the
    # hypervisor has not mapped yet, and pay for it whichever tool they are.
    for _name, _pair, run in steps:
        await (run() if run is not None else asyncio.to_thread(plain))
    for index in range(runs):
        shift = index % len(steps)
        for name, pair, run in steps[shift:] + steps[:shift]:
            # Other work on this (shared) machine blurs the figures: wait a bounded while for quiet.
            BUSY_BEFORE_RUNS.append(await wait_for_quiet_machine(progress))
            if run is None:
                took = await asyncio.to_thread(plain)
                for shared, _ in pairs:
                    shared.plain.append(took)
            else:
                took = await run()
                pair.ours.append(took)
            progress(f"{pair.what}: {name} run {index + 1}: {took:.2f} s")


def job_context(job_id: str, spec: job_pb2.JobSpec) -> JobContext:
    return JobContext(job_id=job_id, owner="0x" + "00" * 20, spec=spec, environment=DEFAULT_ENVIRONMENTS[0])


# --- 1. provisioning ----------------------------------------------------------------------------------

# podtools configure's provision() run directly (no sandbox), so that its peak memory is its own.
PROVISION = """
import json, sys
sys.path.insert(0, sys.argv[5])
from podtools.configure import provision
provision(json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4])
"""
MAX_RSS_OF_CHILD = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def podtools_peak_rss_kib(state: Path, url: str | None, sha256: str = "", size: int = 0) -> int:
    """podtools configure's maximum RSS, fetching one file (url None: nothing, imports only)."""
    roots = [state / name for name in ("inputs", "transformations", "ddos")]
    for folder in roots:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    plan = {
        "datasets": [{"did": DID, "files": [{"url": url, "sha256": sha256, "size": size}] if url else []}],
        "algorithm": {"files": [], "raw_code": "cHJpbnQoMSk="},
        "allow_private_hosts": True,
    }
    plan_path = state / "plan.json"
    plan_path.write_text(json.dumps(plan))
    command = [PYTHON, "-S", "-B", "-c", PROVISION, str(plan_path), *map(str, roots), str(ROOT)]
    output = subprocess.run(
        [PYTHON, "-c", MAX_RSS_OF_CHILD, *command], check=True, capture_output=True, text=True
    )
    for folder in roots:
        shutil.rmtree(folder, ignore_errors=True)
    return int(output.stdout.strip())


async def bench_provisioning(
    state: Path, data: Path, sha256: str, runs: int
) -> tuple[list[Pair], dict[str, float]]:
    tiny_file = state / "tiny.bin"
    tiny_file.parent.mkdir(parents=True, exist_ok=True)
    tiny_file.write_bytes(b"x")
    server, (url, tiny) = serve_files(data, tiny_file)
    try:
        size = data.stat().st_size
        backend = LocalBackend(
            LocalBackendSettings(
                work_dir=state / "work",
                results_dir=state / "results",
                allow_private_input_hosts=True,
                storage=StorageSettings(),
            )
        )
        checked_spec = job_pb2.JobSpec(
            datasets=[
                job_pb2.DatasetInput(did=DID, files=[job_pb2.FileLocation(url=url, sha256=sha256, size=size)])
            ],
            algorithm=job_pb2.AlgorithmInput(raw_code=b"print(1)", runtime="python3"),
        )
        size_only_spec = job_pb2.JobSpec()
        size_only_spec.CopyFrom(checked_spec)
        size_only_spec.datasets[0].files[0].ClearField("sha256")

        def ours(job: JobContext) -> Callable[[], Awaitable[float]]:
            async def run() -> float:
                os.sync()
                began = time.perf_counter()
                outcome = await backend.configure(job, 600)
                elapsed = time.perf_counter() - began
                assert outcome.ok, outcome
                await backend.delete_job_files(job.job_id, keep_results=False)
                return elapsed

            return run

        checked = Pair(
            f"provisioning {size // MiB} MiB over HTTP, sha256 and size declared",
            "configure phase (sandboxed podtools), both checked",
            "`curl -o`",
            0.80,
        )
        size_only = Pair(
            f"provisioning {size // MiB} MiB over HTTP, size declared (no checksum)",
            "configure phase (sandboxed podtools), size checked",
            "`curl -o`",
            0.80,
        )
        await alternate(
            [
                (checked, ours(job_context("b" * 32, checked_spec))),
                (size_only, ours(job_context("d" * 32, size_only_spec))),
            ],
            runs,
            lambda: timed_curl(url, state / "curl.out"),
        )
        backend.close()
        memory = {
            "large": podtools_peak_rss_kib(state / "memory", url, sha256, size) / 1024,
            "tiny": podtools_peak_rss_kib(state / "memory", tiny, hashlib.sha256(b"x").hexdigest(), 1) / 1024,
            "nothing": podtools_peak_rss_kib(state / "memory", None) / 1024,
        }
        return [checked, size_only], memory
    finally:
        server.kill()
        server.wait()


# --- 2. publishing to S3 ----------------------------------------------------------------------------------

UPLOAD_FILE = """
import sys, time
import boto3
from botocore.config import Config
endpoint, key_id, secret, path, bucket, key = sys.argv[1:7]
client = boto3.session.Session().client(
    "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id,
    aws_secret_access_key=secret, config=Config(s3={"addressing_style": "path"}),
)
began = time.perf_counter()
client.upload_file(path, bucket, key)
print(time.perf_counter() - began)
"""


def start_moto(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not start")


async def bench_publishing(state: Path, data: Path, runs: int) -> tuple[Pair, str]:
    port = free_port()
    moto_process = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        storage = StorageSettings(
            result_store=ResultStoreTarget.parse("s3://bench-results/jobs"),
            s3=S3Settings(
                endpoint_url=endpoint, access_key_id=ACCESS["key"], secret_access_key=ACCESS["secret"]
            ),
            ipfs=IpfsSettings(),
        )
        client = storage.s3.client()
        client.create_bucket(Bucket="bench-results")
        client.create_bucket(Bucket="bench-plain")
        backend = LocalBackend(
            LocalBackendSettings(
                work_dir=state / "work-publish", results_dir=state / "results", storage=storage
            )
        )
        spec = job_pb2.JobSpec(algorithm=job_pb2.AlgorithmInput(raw_code=b"print(1)"))
        job = job_context("c" * 32, spec)

        async def ours() -> float:
            backend.create_workspace(job.job_id)
            os.link(data, backend.workspace(job.job_id) / "data" / "outputs" / "model.bin")
            os.sync()
            began = time.perf_counter()
            outcome = await backend.publish(job, 600)
            elapsed = time.perf_counter() - began
            assert outcome.ok, outcome
            await backend.delete_job_files(job.job_id, keep_results=True)
            await asyncio.to_thread(delete_job_results, storage, job.job_id)
            return elapsed

        def plain() -> float:
            os.sync()
            output = subprocess.run(
                [
                    PYTHON,
                    "-c",
                    UPLOAD_FILE,
                    endpoint,
                    ACCESS["key"],
                    ACCESS["secret"],
                    str(data),
                    "bench-plain",
                    "m",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            client.delete_object(Bucket="bench-plain", Key="m")
            return float(output.stdout.strip())

        pair = Pair(
            f"publishing {data.stat().st_size // MiB} MiB to S3 (moto server)",
            f"publish phase (sandboxed podtools: multipart, {storage.s3.part_bytes // MiB} MiB parts, "
            f"{storage.s3.concurrency} threads, sha256 beside)",
            "boto3 `upload_file`, defaults (8 MiB parts, 10 threads), call alone",
            0.80,
        )
        await alternate([(pair, ours)], runs, plain)
        backend.close()
        import moto

        return pair, moto.__version__
    finally:
        moto_process.terminate()
        moto_process.wait(10)


# --- 3. GetResult -------------------------------------------------------------------------------------------

WRITE_RESULT = """
block = bytes(range(256)) * (64 * 1024)
with open("/data/outputs/result.bin", "wb") as sink:
    for _ in range({blocks}):
        sink.write(block)
"""


async def bench_get_result(state: Path, size: int, runs: int) -> Pair:
    data_dir = state / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "d.csv").write_text("a\n1\n")
    environment = {
        "id": "bench",
        "description": "room for a 1 GiB result",
        "cpus": 1.0,
        "memory_bytes": 1024 * MiB,
        "disk_bytes": size + 256 * MiB,
        "max_duration_seconds": 600,
    }
    env = {
        "C2D_FILE_URL_ROOTS": str(data_dir),
        "C2D_ENVIRONMENTS": json.dumps([environment]),
        "C2D_LOG_LEVEL": "warning",
    }
    async with (
        local_suite(state / "suite", extra_env=env) as suite,
        ProviderClient(suite.provider_address, CONSUMER_KEY) as client,
    ):
        did = await client.publish_asset(dataset_ddo("d", [(data_dir / "d.csv").as_uri()]))
        blocks = size // (16 * MiB)
        started = await client.start([did], raw_code=WRITE_RESULT.format(blocks=blocks).encode())
        async for message in client.watch(started.job_id):
            if JobStatus(message.event.status).is_terminal:
                break
        job = (await client.get_job_details(started.job_id)).job
        assert job.status == JobStatus.FINISHED, job.status_text
        result = next(r for r in job.results if r.name == "result.bin")
        stored = state / "suite" / "results" / job.job_id / "outputs" / "result.bin"
        server, (url,) = serve_files(stored)
        try:

            async def ours() -> float:
                destination = state / "downloaded.bin"
                os.sync()
                began = time.perf_counter()
                await download_result(client, job.job_id, result, destination)
                elapsed = time.perf_counter() - began
                destination.unlink()
                return elapsed

            pair = Pair(
                f"downloading a {result.size // MiB} MiB result",
                "GetResult through the provider (c2d_cli/download.py: 1 MiB messages, sha256 checked)",
                "`curl -o` over raw HTTP on loopback",
                0.50,
            )
            await alternate([(pair, ours)], runs, lambda: timed_curl(url, state / "curl.out"))
            return pair
        finally:
            server.kill()
            server.wait()


# --- report ---------------------------------------------------------------------------------------------


def render(
    pairs: list[Pair], memory: dict[str, float] | None, moto_version: str, info: dict[str, str], size: int
) -> str:
    rows = []
    for pair in pairs:
        ours, plain = statistics.median(pair.ours), statistics.median(pair.plain)
        verdict = "met" if pair.ratio() >= pair.target else "NOT met"
        rows.append(
            f"| {pair.what} | {pair.ours_label}: {size / MiB / ours:,.0f} MiB/s ({ours:.2f} s) | "
            f"{pair.plain_label}: {size / MiB / plain:,.0f} MiB/s ({plain:.2f} s) | "
            f"**{100 * pair.ratio():.0f}%** | ≥ {100 * pair.target:.0f}%: {verdict} |"
        )
    runs = len(pairs[0].ours)
    hashed = HASH_SECONDS[0] if HASH_SECONDS else 0.0
    curl_version = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[1]

    def times(values: list[float]) -> str:
        return ", ".join(f"{t:.2f}" for t in values)

    lines = [
        SECTION_TITLE,
        "",
        f"- date: {info['date']}",
        f"- machine: {info['cpus']} CPUs, {info['memory']} memory, Linux {info['kernel']}",
        f"- python {info['python']}",
        f"- {info['bwrap']}; curl {curl_version}; moto {moto_version} (`moto_server`, its own process)",
        f"- {size // MiB} MiB of random bytes; each pair run {runs} times after one untimed round, "
        "alternating which goes first, "
        "`sync` before each run; medians; the HTTP file server (sendfile) and moto each a process of "
        "their own; everything on loopback and the same disk",
        f"- the machine was {100 * statistics.median(BUSY_BEFORE_RUNS or [0]):.0f}% busy with other work "
        f"just before a run at the median, {100 * max(BUSY_BEFORE_RUNS or [0]):.0f}% at most (each run "
        "waited up to 60 s for it to be under 10% busy)",
        "",
        "| what | ours | plain tool | ours / plain (throughput) | target |",
        "|---|---|---|---:|---|",
        *rows,
        "",
        *(memory_lines(memory, size) if memory else []),
        f"sha256 of the {size // MiB} MiB file by one thread, from the page cache: {hashed:.2f} s "
        f"({size / MiB / max(hashed, 1e-9):,.0f} MiB/s) in this run: no checked transfer can be faster.",
        "",
        "Every run of each pair, in seconds:",
        "",
        *[f"- {p.what}: ours {times(p.ours)}; plain {times(p.plain)}" for p in pairs],
        "",
    ]
    return "\n".join(lines)


def memory_lines(memory: dict[str, float], size: int) -> list[str]:
    extra = memory["large"] - memory["nothing"]
    return [
        f"Peak memory of podtools configure (unsandboxed, maximum RSS) fetching the {size // MiB} MiB "
        f"file with its sha256: {memory['large']:.1f} MiB; a 1-byte file: {memory['tiny']:.1f} MiB; no "
        f"file at all (the interpreter and podtools' imports): {memory['nothing']:.1f} MiB. "
        f"**{extra:.1f} MiB extra for the {size // MiB} MiB fetch** (target < 64 MiB: "
        f"{'met' if extra < 64 else 'NOT met'}): four 1 MiB buffers and a thread, whatever the size.",
        "",
    ]


async def main_async(args: argparse.Namespace) -> None:
    size = args.size_mib * MiB
    state = Path(tempfile.mkdtemp(prefix="c2d-bench-storage-"))
    only = set(args.only.split(",")) if args.only else {"provisioning", "publishing", "get_result"}
    try:
        info = machine()
        progress(f"writing a {args.size_mib} MiB file")
        data = state / "dataset.bin"
        sha256 = make_file(data, size)
        HASH_SECONDS.append(sha256_seconds(data))
        pairs: list[Pair] = []
        memory: dict[str, float] | None = None
        moto_version = ""
        if "provisioning" in only:
            progress("provisioning over HTTP")
            provisioning, memory = await bench_provisioning(state / "p", data, sha256, args.runs)
            pairs += provisioning
        if "publishing" in only:
            progress("publishing to S3")
            publishing, moto_version = await bench_publishing(state / "s", data, args.runs)
            pairs.append(publishing)
        if "get_result" in only:
            progress("GetResult")
            pairs.append(await bench_get_result(state / "g", size, args.runs))
        section = render(pairs, memory, moto_version, info, size)
        print(section)
        if not args.no_write and not args.only:
            write_section(section, SECTION_TITLE)
    finally:
        shutil.rmtree(state, ignore_errors=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        progress(f"done (this process peaked at {peak:.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated: provisioning, publishing, get_result (implies --no-write)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
