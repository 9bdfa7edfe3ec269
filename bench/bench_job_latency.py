"""How long a trivial job takes through the whole suite, against the bare sandbox it runs in.

Run by `make bench` (`.venv/bin/python bench/bench_job_latency.py`). It starts the engine, the
operator and the provider as separate processes on loopback, port 0, with all their state in a
temporary folder, and measures in one run:

- latency: sequential trivial jobs (a raw `print("ok")`), each timed from just before Start until
  the Watch stream delivers the terminal status; the phases come from the jobs' event history;
- the baseline: the same algorithm run bare in the sandbox the engine uses for the algorithm phase,
  and, for context, a podtools sandbox start (the engine's python, `-S -B -c pass`, and the
  same with `site` processing) and the algorithm without any sandbox;
- throughput: concurrent clients, each with its own channel, running jobs back to back, with the
  engine allowed 2 and then 4 jobs at a time.

It prints a table and rewrites its own section of BENCHMARKS.md (`--no-write` leaves it alone).
Every loop has a fixed count and every wait a timeout. Other work on the machine blurs the figures:
the run first waits (a bounded while) for the CPUs to be idle, and the report says how busy they
were. A benchmark compares figures measured in the same run; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

from c2d.common.v1 import job_pb2
from c2d.provider.v1 import request_response_pb2 as pb
from c2d.provider.v1 import service_pb2_grpc as provider_grpc
from c2d.provider.v1.service_pb2_grpc import ComputeServiceStub
from c2d_common.server import insecure_channel
from c2d_common.signing import address_of, signing_interceptors
from c2d_common.status import JobStatus
from engine_svc.config import DEFAULT_ENVIRONMENTS
from engine_svc.domain.model import JobContext
from engine_svc.infra.local_backend import LocalBackend, LocalBackendSettings, default_runtimes
from engine_svc.infra.sandbox import SandboxSpec, build_command, find_bwrap

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION_TITLE = "## Job latency (bench/bench_job_latency.py)"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
SERVICE_PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable

# Every call is signed, as a real consumer's is: the figures include signing and checking.
CONSUMER_KEY = "0x" + "c0" * 32
PUBLISHER_KEY = "0x" + "9b" * 32
CONSUMER = address_of(CONSUMER_KEY)
PUBLISHER = address_of(PUBLISHER_KEY)
_SIGNERS: dict[str, list[grpc.aio.ClientInterceptor]] = {}


async def signed_channel(address: str) -> grpc.aio.Channel:
    """A channel whose calls are signed by CONSUMER or PUBLISHER; all channels to one provider share
    the signers, so their nonces come from one clock."""
    if address not in _SIGNERS:
        plain = insecure_channel(address)
        try:
            provider = (
                await ComputeServiceStub(plain).GetNonce(pb.GetNonceRequest(address=CONSUMER))
            ).provider_address
        finally:
            await plain.close()
        _SIGNERS[address] = signing_interceptors({CONSUMER: CONSUMER_KEY, PUBLISHER: PUBLISHER_KEY}, provider)
    return insecure_channel(address, _SIGNERS[address])


ALGORITHM = b'print("ok")\n'
TARGET_OVERHEAD_MS = 100.0

WARMUP_JOBS = 3
LATENCY_JOBS = 50
BARE_RUNS = 50
PODTOOLS_RUNS = 50
THROUGHPUT_CLIENTS = 10
THROUGHPUT_JOBS_PER_CLIENT = 10
THROUGHPUT_CONCURRENCY = (2, 4)

JOB_TIMEOUT_S = 60.0
SANDBOX_TIMEOUT_S = 30.0
SERVICE_START_TIMEOUT_S = 30.0
SERVICE_STOP_TIMEOUT_S = 20.0
OVERALL_TIMEOUT_S = 20 * 60.0
QUIET_CHECKS = 60  # one second each
QUIET_BUSY_FRACTION = 0.10
OTHER_WORK_SAMPLE_S = 0.5

TERMINAL = frozenset(int(s) for s in JobStatus if s.is_terminal)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- figures ----------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p90: float
    p99: float
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Summary:
        return cls(
            count=len(samples_ms),
            p50=percentile(samples_ms, 50),
            p90=percentile(samples_ms, 90),
            p99=percentile(samples_ms, 99),
            mean=statistics.fmean(samples_ms),
            low=min(samples_ms),
            high=max(samples_ms),
        )


@dataclass(frozen=True)
class Segment:
    key: str
    label: str
    # The status changes it runs between, as the operator stored them; None: the client's side
    # (just before Start, or when the client has the terminal status). The operator's clock and the
    # client's are the same machine's wall clock.
    after: JobStatus | None
    until: JobStatus | None


SEGMENTS = (
    Segment(
        "start_to_queued",
        "Start called -> QUEUED stored (provider checks, operator insert)",
        None,
        JobStatus.QUEUED,
    ),
    Segment(
        "dispatch",
        "QUEUED -> STARTED stored (operator -> engine RunJob, engine reply)",
        JobStatus.QUEUED,
        JobStatus.STARTED,
    ),
    Segment(
        "started_to_configuring", "STARTED -> CONFIGURING stored", JobStatus.STARTED, JobStatus.CONFIGURING
    ),
    Segment(
        "configure",
        "configure sandbox (CONFIGURING -> PROVISIONING_SUCCEEDED)",
        JobStatus.CONFIGURING,
        JobStatus.PROVISIONING_SUCCEEDED,
    ),
    Segment(
        "provisioned_to_running",
        "PROVISIONING_SUCCEEDED -> RUNNING stored",
        JobStatus.PROVISIONING_SUCCEEDED,
        JobStatus.RUNNING,
    ),
    Segment("run", "algorithm sandbox (RUNNING -> PUBLISHING)", JobStatus.RUNNING, JobStatus.PUBLISHING),
    Segment(
        "publish",
        "publish sandbox + clean-up (PUBLISHING -> FINISHED)",
        JobStatus.PUBLISHING,
        JobStatus.FINISHED,
    ),
    Segment("delivery", "FINISHED stored -> client has it (Watch)", JobStatus.FINISHED, None),
)


@dataclass
class JobSample:
    latency_ms: float
    start_rpc_ms: float
    status: int
    segments_ms: dict[str, float] = field(default_factory=dict)


# --- the suite as separate processes ------------------------------------------------------------------


@dataclass
class ServiceProcess:
    name: str
    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    def cpu_seconds(self) -> float:
        """The service's own CPU time (user + system) so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def service_command(module: str) -> list[str]:
    return [SERVICE_PYTHON, "-m", module]


async def start_service(name: str, module: str, env: dict[str, str], state: Path) -> ServiceProcess:
    """Starts `python -m module` and waits until it has written the port it bound (port 0)."""
    port_file = state / f"{name}.port"
    log_path = state / f"{name}.log"
    environment = {**os.environ, **env, "C2D_PORT_FILE": str(port_file), "C2D_LOG_LEVEL": "warning"}
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *service_command(module),
            cwd=ROOT,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(
                f"{name} exited with code {process.returncode}: {log_path.read_text()[-2000:]}"
            )
        if port_file.exists():
            return ServiceProcess(name, process, int(port_file.read_text()), log_path)
        await asyncio.sleep(0.02)
    process.kill()
    await process.wait()
    raise RuntimeError(f"{name} did not report its port within {SERVICE_START_TIMEOUT_S:.0f} s")


async def stop_service(service: ServiceProcess) -> None:
    """SIGTERM (the services shut down gracefully), then SIGKILL if it does not end in time."""
    if service.process.returncode is not None:
        return
    service.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(service.process.wait(), SERVICE_STOP_TIMEOUT_S)
    except TimeoutError:
        print(f"  {service.name} ignored SIGTERM for {SERVICE_STOP_TIMEOUT_S:.0f} s; killing it")
        service.process.kill()
        await service.process.wait()


@dataclass
class Suite:
    state: Path
    engine: ServiceProcess
    operator: ServiceProcess
    provider: ServiceProcess

    @property
    def provider_address(self) -> str:
        return f"127.0.0.1:{self.provider.port}"

    @property
    def services(self) -> tuple[ServiceProcess, ...]:
        return (self.engine, self.operator, self.provider)


@contextlib.asynccontextmanager
async def running_suite(state: Path, max_concurrent_jobs: int, data_root: Path) -> AsyncIterator[Suite]:
    """The three services on port 0, their state under `state`; file:// datasets may lie under
    `data_root` (C2D_FILE_URL_ROOTS)."""
    state.mkdir(parents=True)
    started: list[ServiceProcess] = []
    try:
        engine = await start_service(
            "engine",
            "engine_svc",
            {
                "C2D_ENGINE_LISTEN": "127.0.0.1:0",
                "C2D_WORK_DIR": str(state / "work"),
                "C2D_RESULTS_DIR": str(state / "results"),
                "C2D_MAX_CONCURRENT_JOBS": str(max_concurrent_jobs),
                "C2D_FILE_URL_ROOTS": str(data_root),
            },
            state,
        )
        started.append(engine)
        operator = await start_service(
            "operator",
            "operator_svc",
            {
                "C2D_OPERATOR_LISTEN": "127.0.0.1:0",
                "C2D_DATABASE_URL": f"sqlite:///{state / 'operator.db'}",
                "C2D_ENGINE_ADDRESS": f"127.0.0.1:{engine.port}",
            },
            state,
        )
        started.append(operator)
        provider = await start_service(
            "provider",
            "provider_svc",
            {
                "C2D_PROVIDER_LISTEN": "127.0.0.1:0",
                "C2D_OPERATOR_ADDRESS": f"127.0.0.1:{operator.port}",
                "C2D_ASSETS_DIR": str(state / "assets"),
                "C2D_RESULTS_DIR": str(state / "results"),
                "C2D_FILE_URL_ROOTS": str(data_root),
                # The benchmark's keys publish their own file:// data (see C2D_PUBLISHERS).
                "C2D_PUBLISHERS": "*",
            },
            state,
        )
        started.append(provider)
        yield Suite(state, engine, operator, provider)
    finally:
        # The front door first, the engine last: nothing calls a service that is already gone.
        for service in reversed(started):
            await stop_service(service)


async def publish_dataset(channel: grpc.aio.Channel, data: Path) -> str:
    ddo = struct_pb2.Struct()
    ddo.update(
        {
            "metadata": {"name": "bench dataset", "type": "dataset"},
            "services": [
                {"type": "compute", "files": [{"url": data.as_uri()}], "compute": {"allowRawAlgorithm": True}}
            ],
        }
    )
    assets = provider_grpc.AssetServiceStub(channel)
    response = await assets.PublishAsset(
        pb.PublishAssetRequest(publisher_address=PUBLISHER, ddo=ddo), timeout=30
    )
    return response.did


# --- one job ----------------------------------------------------------------------------------------


async def run_job(compute: provider_grpc.ComputeServiceStub, did: str, *, with_history: bool) -> JobSample:
    """Start, then Watch until the terminal status; the clock stops when the client has it."""
    wall_before = time.time()
    before = time.perf_counter()
    started = await compute.Start(
        pb.StartRequest(
            consumer_address=CONSUMER, dataset_did=did, raw_algorithm=pb.RawAlgorithm(code=ALGORITHM)
        ),
        timeout=JOB_TIMEOUT_S,
    )
    start_rpc = time.perf_counter() - before
    terminal: int | None = None
    elapsed = 0.0
    wall_after = 0.0
    watch = compute.Watch(
        pb.WatchRequest(consumer_address=CONSUMER, job_id=started.job_id), timeout=JOB_TIMEOUT_S
    )
    async for response in watch:
        if response.event.status in TERMINAL:
            elapsed = time.perf_counter() - before
            wall_after = time.time()
            terminal = response.event.status
    if terminal is None:
        raise RuntimeError(f"job {started.job_id}: the Watch stream ended without a terminal status")
    sample = JobSample(latency_ms=elapsed * 1000, start_rpc_ms=start_rpc * 1000, status=terminal)
    if with_history and terminal == JobStatus.FINISHED:
        details = await compute.GetJobDetails(
            pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id=started.job_id), timeout=JOB_TIMEOUT_S
        )
        moments = {int(e.status): e.time.seconds + e.time.nanos / 1e9 for e in details.history}
        for segment in SEGMENTS:
            begin = wall_before if segment.after is None else moments.get(int(segment.after))
            end = wall_after if segment.until is None else moments.get(int(segment.until))
            if begin is not None and end is not None:
                sample.segments_ms[segment.key] = (end - begin) * 1000
    return sample


def require_finished(samples: Sequence[JobSample], what: str) -> None:
    failed = [s for s in samples if s.status != JobStatus.FINISHED]
    if failed:
        statuses = sorted({JobStatus(s.status).name for s in failed})
        raise RuntimeError(
            f"{what}: {len(failed)} of {len(samples)} jobs did not finish ({', '.join(statuses)})"
        )


# --- the bare sandbox --------------------------------------------------------------------------------


def _backend(state: Path) -> LocalBackend:
    return LocalBackend(
        LocalBackendSettings(
            work_dir=state / "work", results_dir=state / "results", podtools_python=SERVICE_PYTHON
        )
    )


def algorithm_sandbox(state: Path) -> SandboxSpec:
    """The algorithm phase's sandbox exactly as the engine builds it (LocalBackend.algorithm_sandbox),
    on the default environment and runtime, with a workspace in a temporary folder."""
    backend = _backend(state)
    job = JobContext(
        job_id="0" * 32,
        owner="0x" + "0" * 40,
        spec=job_pb2.JobSpec(algorithm=job_pb2.AlgorithmInput(raw_code=ALGORITHM)),
        environment=DEFAULT_ENVIRONMENTS[0],
    )
    backend.create_workspace(job.job_id)
    (backend.workspace(job.job_id) / "data" / "transformations" / "algorithm").write_bytes(ALGORITHM)
    spec = backend.algorithm_sandbox(job)
    assert spec is not None
    return spec


def podtools_sandbox(state: Path) -> SandboxSpec:
    """A podtools sandbox as the engine starts it (its own python), running nothing."""
    return _backend(state).podtools_sandbox(["-c", "pass"], network="none")


async def time_command(argv: list[str], env: dict[str, str], expected_stdout: bytes | None) -> float:
    """Milliseconds from spawning to the exit of a command, started as the engine starts a sandbox."""
    before = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), SANDBOX_TIMEOUT_S)
    elapsed = time.perf_counter() - before
    if process.returncode != 0 or (expected_stdout is not None and stdout != expected_stdout):
        raise RuntimeError(f"{argv[-1]!r} failed ({process.returncode}): {stdout[-500:]!r} {stderr[-500:]!r}")
    return elapsed * 1000


async def time_repeatedly(runs: int, argv: list[str], env: dict[str, str], expected: bytes | None) -> Summary:
    await time_command(argv, env, expected)  # page cache and dentries warm, as for the suite's jobs
    return Summary.of([await time_command(argv, env, expected) for _ in range(runs)])


class OtherWork:
    """CPU time of the processes outside this benchmark's process tree: other work on the machine,
    which would otherwise pass for the sandboxes' (see CPU_PARTS). Sampled every
    OTHER_WORK_SAMPLE_S, so it is a lower bound: a process that starts and ends between two samples
    is never seen. Kernel threads are left out; they also work for our sandboxes."""

    def __init__(self) -> None:
        self._start_tick = float(Path("/proc/uptime").read_text().split()[0]) * CLOCK_TICKS
        # (pid, start tick) -> (CPU seconds when first seen, or 0 if it started after us; when last seen)
        self._cpu: dict[tuple[int, int], tuple[float, float]] = {}

    def sample(self) -> None:
        processes: dict[int, tuple[int, float, int]] = {}  # pid -> (parent, CPU seconds, start tick)
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
                    processes[int(entry.name)] = (int(fields[1]), cpu, int(fields[19]))
        ours: set[int] = {os.getpid()}
        others: set[int] = set()
        for pid in processes:
            chain, current = [], pid
            while current > 2 and current in processes and current not in ours and current not in others:
                chain.append(current)
                current = processes[current][0]
            (ours if current in ours else others).update(chain)
        for pid in others:
            parent, cpu, start = processes[pid]
            if parent == 2:  # a kernel thread
                continue
            key = (pid, start)
            first = self._cpu[key][0] if key in self._cpu else (0.0 if start >= self._start_tick else cpu)
            self._cpu[key] = (first, cpu)

    def seconds(self) -> float:
        self.sample()
        return sum(last - first for first, last in self._cpu.values())

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(OTHER_WORK_SAMPLE_S)


# Where CPU time goes, per job. The sandboxes' own CPU time cannot be read from the engine's
# children times: the init of a sandbox's PID namespace reaps the sandboxed process, and the kernel
# never adds its time to bwrap's or the engine's. "sandboxes+kernel" is therefore the machine's busy
# time minus the services, this benchmark and the other work seen: the sandboxes, the kernel's work
# for them, and any other work too short-lived to be seen.
CPU_PARTS = ("provider", "operator", "engine", "client", "other work", "sandboxes+kernel", "machine")


def cpu_snapshot(suite: Suite, other_work: OtherWork) -> dict[str, float]:
    """CPU seconds used so far by each service, by this process, by other work and by the machine."""
    snapshot = {service.name: service.cpu_seconds() for service in suite.services}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    snapshot["client"] = usage.ru_utime + usage.ru_stime
    snapshot["other work"] = other_work.seconds()
    snapshot["machine"], snapshot["machine_total"] = machine_cpu_seconds()
    return snapshot


def cpu_ms_per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    spent = {key: (after[key] - before[key]) * 1000 / jobs for key in before}
    named = sum(spent[key] for key in ("provider", "operator", "engine", "client", "other work"))
    spent["sandboxes+kernel"] = max(spent["machine"] - named, 0.0)
    return spent


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over CPUs (/proc/stat)."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    )
    busy = user + nice + system + irq + softirq  # guest time is already counted in user
    return busy / CLOCK_TICKS, (busy + idle + iowait + steal) / CLOCK_TICKS


async def machine_busy_fraction(seconds: float = 1.0) -> float:
    before = machine_cpu_seconds()
    await asyncio.sleep(seconds)
    after = machine_cpu_seconds()
    return (after[0] - before[0]) / max(after[1] - before[1], 1e-9)


async def wait_for_quiet_machine(progress: Callable[[str], None]) -> float:
    """Waits (a bounded while) for the machine to be idle, so that other work does not blur the
    figures; answers the busy fraction last seen, which the report records."""
    busy = 1.0
    for attempt in range(QUIET_CHECKS):
        busy = await machine_busy_fraction()
        if busy < QUIET_BUSY_FRACTION:
            return busy
        if attempt == 0:
            progress(f"the machine is {100 * busy:.0f}% busy with other work; waiting up to {QUIET_CHECKS} s")
    progress(f"the machine is still {100 * busy:.0f}% busy; measuring anyway (figures will be noisy)")
    return busy


# --- measurements ------------------------------------------------------------------------------------


@dataclass
class Baseline:
    bare: Summary
    podtools_start: Summary
    podtools_start_with_site: Summary
    unsandboxed: Summary


@dataclass
class Throughput:
    max_concurrent_jobs: int
    jobs: int
    seconds: float
    latency: Summary
    # CPU milliseconds per job, by CPU_PARTS.
    cpu_ms_per_job: dict[str, float]
    # How busy the whole machine was during the run, 1.0 = every CPU all the time.
    machine_busy: float


@dataclass
class Results:
    latency: Summary
    start_rpc: Summary
    segments: dict[str, Summary]
    cpu_ms_per_job: dict[str, float]
    baseline: Baseline
    throughput: list[Throughput]
    # How busy the machine was just before the run, and the share of its CPUs that other work was
    # seen to take during the run (a lower bound; see OtherWork), both 0.0 to 1.0.
    background_busy: float
    other_work: float


async def measure_baseline(state: Path) -> Baseline:
    bwrap = find_bwrap()
    # The same sandbox, without running it as a host user (which needs the engine to write its
    # user maps while it waits): that step's cost counts in the suite's overhead.
    spec = dataclasses.replace(algorithm_sandbox(state / "bare"), host_user=None)
    bare = await time_repeatedly(BARE_RUNS, build_command(spec, bwrap), spec.env, b"ok\n")
    podtools = podtools_sandbox(state / "podtools")
    podtools_start = await time_repeatedly(PODTOOLS_RUNS, build_command(podtools, bwrap), podtools.env, b"")
    # What `site` (the virtualenv's site-packages and their .pth hooks) would add: the engine starts
    # podtools with -S and puts the packages they may use on PYTHONPATH instead.
    podtools.argv[podtools.argv.index("-S")] = "-s"
    with_site = await time_repeatedly(PODTOOLS_RUNS, build_command(podtools, bwrap), podtools.env, b"")
    transformations = next(source for source, target in spec.ro_binds if target == "/data/transformations")
    script = str(Path(transformations) / "algorithm")
    unsandboxed = await time_repeatedly(BARE_RUNS, [spec.argv[0], script], spec.env, b"ok\n")
    return Baseline(
        bare=bare,
        podtools_start=podtools_start,
        podtools_start_with_site=with_site,
        unsandboxed=unsandboxed,
    )


async def measure_latency(
    suite: Suite, did: str, other_work: OtherWork
) -> tuple[list[JobSample], dict[str, float]]:
    await warm_up(suite, did)
    channel = await signed_channel(suite.provider_address)
    try:
        compute = provider_grpc.ComputeServiceStub(channel)
        cpu_before = cpu_snapshot(suite, other_work)
        samples = [await run_job(compute, did, with_history=True) for _ in range(LATENCY_JOBS)]
        cpu_after = cpu_snapshot(suite, other_work)
    finally:
        await channel.close()
    require_finished(samples, "latency")
    return samples, cpu_ms_per_job(cpu_before, cpu_after, LATENCY_JOBS)


async def measure_throughput(
    suite: Suite, did: str, max_concurrent_jobs: int, other_work: OtherWork
) -> Throughput:
    async def client() -> list[JobSample]:
        channel = await signed_channel(suite.provider_address)
        try:
            compute = provider_grpc.ComputeServiceStub(channel)
            return [
                await run_job(compute, did, with_history=False) for _ in range(THROUGHPUT_JOBS_PER_CLIENT)
            ]
        finally:
            await channel.close()

    cpu_before = cpu_snapshot(suite, other_work)
    before = time.perf_counter()
    per_client = await asyncio.gather(*(client() for _ in range(THROUGHPUT_CLIENTS)))
    seconds = time.perf_counter() - before
    cpu_after = cpu_snapshot(suite, other_work)
    samples = [s for batch in per_client for s in batch]
    require_finished(samples, f"throughput at {max_concurrent_jobs} concurrent jobs")
    busy = (cpu_after["machine"] - cpu_before["machine"]) / (
        cpu_after["machine_total"] - cpu_before["machine_total"]
    )
    return Throughput(
        max_concurrent_jobs=max_concurrent_jobs,
        jobs=len(samples),
        seconds=seconds,
        latency=Summary.of([s.latency_ms for s in samples]),
        cpu_ms_per_job=cpu_ms_per_job(cpu_before, cpu_after, len(samples)),
        machine_busy=busy,
    )


async def warm_up(suite: Suite, did: str) -> None:
    channel = await signed_channel(suite.provider_address)
    try:
        compute = provider_grpc.ComputeServiceStub(channel)
        for _ in range(WARMUP_JOBS):
            require_finished([await run_job(compute, did, with_history=False)], "warm-up")
    finally:
        await channel.close()


async def publish(suite: Suite, data: Path) -> str:
    channel = await signed_channel(suite.provider_address)
    try:
        return await publish_dataset(channel, data)
    finally:
        await channel.close()


async def measure(state: Path, progress: Callable[[str], None]) -> Results:
    datasets = state / "datasets"
    datasets.mkdir()
    data = datasets / "data.csv"
    data.write_text("a,b\n1,2\n3,4\n")

    background_busy = await wait_for_quiet_machine(progress)
    other_work = OtherWork()
    monitor = asyncio.create_task(other_work.run())
    started = time.perf_counter()
    try:
        progress(f"baseline: bare sandbox x{BARE_RUNS}, podtools-like sandbox x{PODTOOLS_RUNS}")
        baseline = await measure_baseline(state / "baseline")
        throughput: list[Throughput] = []
        latency_samples: list[JobSample] = []
        cpu: dict[str, float] = {}
        for max_concurrent in THROUGHPUT_CONCURRENCY:
            async with running_suite(state / f"suite-{max_concurrent}", max_concurrent, datasets) as suite:
                did = await publish(suite, data)
                if not latency_samples:
                    progress(f"latency: {WARMUP_JOBS} warm-up + {LATENCY_JOBS} sequential jobs")
                    latency_samples, cpu = await measure_latency(suite, did, other_work)
                else:
                    await warm_up(suite, did)
                progress(
                    f"throughput: {THROUGHPUT_CLIENTS} clients x {THROUGHPUT_JOBS_PER_CLIENT} jobs, "
                    f"C2D_MAX_CONCURRENT_JOBS={max_concurrent}"
                )
                throughput.append(await measure_throughput(suite, did, max_concurrent, other_work))
        other_share = other_work.seconds() / ((time.perf_counter() - started) * (os.cpu_count() or 1))
    finally:
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor

    segments = {
        seg.key: Summary.of([s.segments_ms[seg.key] for s in latency_samples if seg.key in s.segments_ms])
        for seg in SEGMENTS
    }
    return Results(
        latency=Summary.of([s.latency_ms for s in latency_samples]),
        start_rpc=Summary.of([s.start_rpc_ms for s in latency_samples]),
        segments=segments,
        cpu_ms_per_job=cpu,
        baseline=baseline,
        throughput=throughput,
        background_busy=background_busy,
        other_work=other_share,
    )


# --- report ------------------------------------------------------------------------------------------


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def machine() -> dict[str, str]:
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    algorithm_python = default_runtimes()["python3"]
    return {
        "date": _run(["date", "-u"]),
        "cpus": _run(["nproc"]),
        "memory": memory,
        "kernel": platform.release(),
        "python": f"{platform.python_version()} (services, podtools); "
        f"{_run([algorithm_python, '--version']).removeprefix('Python ')} ({algorithm_python}, algorithms)",
        "bwrap": _run([find_bwrap(), "--version"]),
    }


def _ms(value: float) -> str:
    return f"{value:.1f}"


def render(results: Results, info: dict[str, str]) -> str:
    """The section of BENCHMARKS.md (also what is printed), in Markdown."""
    lat = results.latency
    base = results.baseline
    overhead = lat.p50 - base.bare.p50
    total_jobs = THROUGHPUT_CLIENTS * THROUGHPUT_JOBS_PER_CLIENT

    def row(name: str, s: Summary) -> str:
        return (
            f"| {name} | {s.count} | {_ms(s.p50)} | {_ms(s.p90)} | {_ms(s.p99)} | {_ms(s.mean)} "
            f"| {_ms(s.low)} | {_ms(s.high)} |"
        )

    lines = [
        SECTION_TITLE,
        "",
        f"- date: {info['date']}",
        f"- machine: {info['cpus']} CPUs, {info['memory']} memory, Linux {info['kernel']}; "
        f"{100 * results.background_busy:.0f}% busy just before the run; other work seen during the run "
        f"took at least {100 * results.other_work:.0f}% of its CPUs",
        f"- python: {info['python']}",
        f"- sandbox: {info['bwrap']}",
        f"- workload: raw algorithm `{ALGORITHM.decode().strip()}` on a 3-line file:// dataset; "
        "loopback gRPC; services as separate processes, SQLite operator database, C2D_LOG_LEVEL=warning",
        "",
        "### Latency: Start until Watch delivers the terminal status",
        "",
        "| what | runs | p50 ms | p90 ms | p99 ms | mean ms | min ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row(f"suite: trivial job, sequential (after {WARMUP_JOBS} warm-up jobs)", lat),
        row("  of which the Start call", results.start_rpc),
        row("bare: same algorithm in the engine's algorithm sandbox (not as a host user)", base.bare),
        row("podtools sandbox start as the engine does it (`python -S -B -c pass`)", base.podtools_start),
        row("  context: the same with site processing (`-s` instead of `-S`)", base.podtools_start_with_site),
        row("context: same algorithm, no sandbox", base.unsandboxed),
        "",
        f"**Suite overhead over the bare sandbox: {_ms(overhead)} ms at p50 "
        f"(suite p50 / bare p50 = {lat.p50 / base.bare.p50:.1f}); target < {TARGET_OVERHEAD_MS:.0f} ms: "
        f"{'met' if overhead < TARGET_OVERHEAD_MS else 'NOT met'}.**",
        "",
        "### Where the time goes (p50 of each segment over the same jobs)",
        "",
        "Segments run between the moments the operator stored each status change; the first starts "
        "when the client calls Start, the last ends when the client receives FINISHED.",
        "",
        "| segment | p50 ms | p90 ms | share of summed p50 |",
        "|---|---:|---:|---:|",
    ]
    summed = sum(results.segments[seg.key].p50 for seg in SEGMENTS)
    for seg in SEGMENTS:
        s = results.segments[seg.key]
        lines.append(f"| {seg.label} | {_ms(s.p50)} | {_ms(s.p90)} | {100 * s.p50 / summed:.0f}% |")
    lines.append(f"| sum of segment p50s | {_ms(summed)} | | |")
    cpu = results.cpu_ms_per_job
    lines += [
        "",
        "CPU time per job during the sequential run: "
        + ", ".join(f"{name} {_ms(cpu[name])} ms" for name in CPU_PARTS)
        + ". (client: this benchmark; other work: processes outside the suite and this benchmark; "
        "sandboxes+kernel: the rest of the machine's busy time; machine: all of it.)",
        "",
        f"### Throughput: {THROUGHPUT_CLIENTS} clients (own channel each) x {THROUGHPUT_JOBS_PER_CLIENT} "
        f"jobs back to back = {total_jobs} jobs",
        "",
        "| C2D_MAX_CONCURRENT_JOBS | jobs | wall s | jobs/s | latency p50 ms | latency p99 ms "
        "| machine CPU busy | CPU ms/job: " + " / ".join(CPU_PARTS) + " |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in results.throughput:
        lines.append(
            f"| {t.max_concurrent_jobs} | {t.jobs} | {t.seconds:.2f} | {t.jobs / t.seconds:.1f} "
            f"| {_ms(t.latency.p50)} | {_ms(t.latency.p99)} | {100 * t.machine_busy:.0f}% "
            f"| {' / '.join(f'{t.cpu_ms_per_job[k]:.0f}' for k in CPU_PARTS)} |"
        )
    lines += ["", "### Interpretation", "", *interpret(results)]
    return "\n".join(lines) + "\n"


def interpret(results: Results) -> list[str]:
    """A few sentences built from this run's figures, so that they stay true when the figures change."""
    lat = results.latency
    base = results.baseline
    seg = {key: s.p50 for key, s in results.segments.items()}
    overhead = lat.p50 - base.bare.p50
    sandboxes = seg["configure"] + seg["run"] + seg["publish"]
    hops = seg["start_to_queued"] + seg["dispatch"] + seg["delivery"]
    gaps = seg["started_to_configuring"] + seg["provisioned_to_running"]
    site_cost = base.podtools_start_with_site.p50 - base.podtools_start.p50
    met = overhead < TARGET_OVERHEAD_MS
    out = [
        f"- Target {'met' if met else 'NOT met'}: the suite adds {overhead:.0f} ms at p50 to the "
        f"{base.bare.p50:.0f} ms of the bare sandbox (a trivial job takes {lat.p50:.0f} ms end to end, "
        f"p99 {lat.p99:.0f} ms; the target is less than {TARGET_OVERHEAD_MS:.0f} ms added). Ocean's C2D, "
        "which polls every 5 s at each hop, needs 20 s or more for the same job; here every hop is "
        "pushed and no segment waits on a timer.",
        f"- The three sandboxes take {sandboxes:.0f} of the {sum(seg.values()):.0f} ms: configure "
        f"{seg['configure']:.0f}, algorithm {seg['run']:.0f} (the bare sandbox: {base.bare.p50:.0f}), "
        f"publish {seg['publish']:.0f}. Configure and publish are podtools runs, and a podtools sandbox "
        f"costs {base.podtools_start.p50:.0f} ms just to start its python doing nothing (with `site` "
        f"processing it would be {site_cost:.0f} ms more; the engine skips it). The rest of configure "
        "and publish is their imports and work.",
        f"- The gRPC hops and the operator's writes on the way in and out take {hops:.0f} ms (Start to "
        f"QUEUED {seg['start_to_queued']:.0f}, dispatch to the engine {seg['dispatch']:.0f}, delivery to "
        f"the client {seg['delivery']:.0f}); between back-to-back status changes the operator takes "
        f"about {gaps / 2:.0f} ms each, one SQLite commit, off the critical path while a sandbox runs.",
    ]
    if results.throughput:
        best = max(results.throughput, key=lambda t: t.jobs / t.seconds)
        parts = [
            f"{t.max_concurrent_jobs} slots give {t.jobs / t.seconds:.1f} jobs/s with the CPUs "
            f"{100 * t.machine_busy:.0f}% busy"
            for t in results.throughput
        ]
        saturated = all(t.machine_busy >= 0.85 for t in results.throughput)
        services = ("provider", "operator", "engine")
        heaviest = max(services, key=lambda name: best.cpu_ms_per_job[name])
        queueing_ms = THROUGHPUT_CLIENTS * best.seconds / best.jobs * 1000
        out.append(
            f"- Under load ({THROUGHPUT_CLIENTS} clients, {os.cpu_count()} CPUs): {'; '.join(parts)}; one "
            f"job at a time gives {1000 / lat.mean:.1f} jobs/s. "
            + (
                "The CPUs are saturated at every setting, so slots beyond the cores add nothing: "
                "throughput is set by CPU per job, of which the sandboxes (and the kernel's work for "
                f"them) take {best.cpu_ms_per_job['sandboxes+kernel']:.0f} ms and the busiest service, the "
                f"{heaviest}, {best.cpu_ms_per_job[heaviest]:.0f} ms. "
                if saturated
                else "The CPUs are not saturated, so more slots can still raise throughput. "
            )
            + f"In this closed loop a job's latency is the number of clients over the throughput "
            f"({queueing_ms:.0f} ms; measured p50 {best.latency.p50:.0f} ms): under load, jobs mostly "
            "wait for a slot."
        )
    if max(results.background_busy, results.other_work) >= QUIET_BUSY_FRACTION:
        out.append(
            f"- Other work shared the machine (at least {100 * results.other_work:.0f}% of its CPUs during "
            f"the run, {100 * results.background_busy:.0f}% just before): these figures are noisier and "
            "slower than on a quiet machine."
        )
    return out


def write_section(section: str, title: str = SECTION_TITLE) -> None:
    """Replaces a benchmark's section of BENCHMARKS.md (the one headed title), keeping every other."""
    if BENCHMARKS_MD.exists():
        lines = BENCHMARKS_MD.read_text().splitlines(keepends=True)
    else:
        lines = ["# Benchmarks\n", "\n", "Written by the scripts in bench/ (`make bench`).\n", "\n"]
    start = next((i for i, line in enumerate(lines) if line.rstrip() == title), None)
    if start is None:
        if lines and lines[-1].strip():
            lines.append("\n")
        lines.append(section)
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
            len(lines),
        )
        lines[start:end] = [section, "\n"] if end < len(lines) else [section]
    BENCHMARKS_MD.write_text("".join(lines))


# --- main --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-write", action="store_true", help="print the figures, leave BENCHMARKS.md alone"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary state folder (for a post-mortem)"
    )
    args = parser.parse_args()

    info = machine()
    state = Path(tempfile.mkdtemp(prefix="c2d-bench-"))
    print(f"state in {state}")

    def progress(message: str) -> None:
        print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)

    try:
        results = asyncio.run(asyncio.wait_for(measure(state, progress), OVERALL_TIMEOUT_S))
    except BaseException:
        for log in sorted(state.glob("suite-*/*.log")):
            tail = log.read_text(errors="replace").strip()
            if tail:
                print(f"--- {log.relative_to(state)} (last lines)\n{tail[-3000:]}", file=sys.stderr)
        raise
    finally:
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)
    section = render(results, info)
    print()
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"wrote {BENCHMARKS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
