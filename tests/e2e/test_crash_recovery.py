"""Crash recovery: services killed with SIGKILL while jobs run, and started again.

Every job still reaches its correct terminal state with its own result, none is lost, none runs
twice to completion, and a client that follows each job with Watch, resuming after every cut with
the last sequence it saw, receives each of the job's events exactly once.

Jobs are started while the kills go on (a Start may meet a restarting provider or operator). Some
kills land at random moments; the others are aimed: when a job is seen (through Watch, then read
back with GetJobDetails) in a phase some service has not been killed in yet, that service is
killed at once. Whether a kill landed in a phase is decided by the stored history, not by what the
client saw: it did when some job's last event stored before the kill is that phase. Every service
must have been killed in every phase (configuring, running, publishing).

The dataset comes from an HTTP server that sends it slowly (a few 64 KiB pieces with a pause
between them), so each job's configuration phase is a real fetch in the configuration sandbox
lasting about a second. A file:// dataset would be laid out by the engine itself in a few
milliseconds, a phase no kill could be aimed at.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from c2d.common.v1 import job_pb2
from c2d.provider.v1 import request_response_pb2 as pb
from c2d.provider.v1 import service_pb2_grpc as provider_grpc
from c2d_cli.client import ProviderClient
from c2d_cli.download import download_result
from c2d_cli.main import dataset_ddo
from c2d_cli.processes import LocalSuite, local_suite, restart_service
from c2d_common.server import insecure_channel
from c2d_common.signing import address_of, signing_interceptors
from c2d_common.status import JobStatus
from tests.conftest import requires_bwrap
from tests.servers.http_files import FileServer

pytestmark = [pytest.mark.e2e, requires_bwrap]

CONSUMER_KEY = "0x" + "ab" * 32
CONSUMER = address_of(CONSUMER_KEY)
SERVICES = ("provider", "operator", "engine")
PHASES = (JobStatus.CONFIGURING, JobStatus.RUNNING, JobStatus.PUBLISHING)
TARGETS = {(service, phase) for service in SERVICES for phase in PHASES}
# At least MIN_JOBS; more (up to MAX_JOBS) only while some (service, phase) pair still waits for
# a job to be in that phase. A restart costs 2-15 s here (the provider's imports alone take 4 s
# of CPU), so kills are few: the aimed ones, and RANDOM_KILLS more.
MIN_JOBS = 16
MAX_JOBS = 120
# The issue asks for at least 50 kills in all: the aimed ones (about 9) and these, at random
# moments (0.2 to 1.5 s apart, after the previous restart), with jobs started until they are done.
RANDOM_KILLS = 45
MIN_KILLS = 50
# Every FAILING_EVERY-th job's algorithm fails (exit code 3): it must end as ALGORITHM_FAILED with
# that exit code and its logs, whatever was killed meanwhile, never as FINISHED.
FAILING_EVERY = 4
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}

T = TypeVar("T")


async def _retrying(call: Callable[[], Awaitable[T]], attempts: int = 600) -> T:
    """A client that outlives crashes: retries what a restart cures."""
    for _ in range(attempts):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the service never came back")


async def _signed_channel(address: str) -> grpc.aio.Channel:
    """Signs every call; the provider's address (which signatures name) survives its restarts."""
    async with ProviderClient(address, CONSUMER_KEY) as client:
        provider = client.provider_address
    return insecure_channel(address, signing_interceptors({CONSUMER: CONSUMER_KEY}, provider))


def _seconds(event: job_pb2.JobEvent) -> float:
    return event.time.seconds + event.time.nanos / 1e9


def stored_status_at(history: Sequence[job_pb2.JobEvent], moment: float) -> int | None:
    """The job's status as the operator had stored it at that moment (None: not registered yet)."""
    status = None
    for event in history:
        if _seconds(event) > moment:
            break
        status = event.status
    return status


def _fails(index: int) -> bool:
    return index % FAILING_EVERY == FAILING_EVERY - 1


@dataclass
class Followed:
    """What the client saw of one job: every sequence received (the Start reply's first), and the
    last status."""

    index: int
    job_id: str
    sequences: list[int]
    status: int
    start_retried: bool
    watch_calls: int = 1


@dataclass
class Kills:
    moments: list[tuple[float, str]] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)
    # (service, phase) pairs an aimed kill is known to have hit, from the stored history.
    confirmed: set[tuple[str, int]] = field(default_factory=set)

    async def kill(self, suite: LocalSuite, service: str) -> float:
        moment = time.time()
        self.moments.append((moment, service))
        await restart_service(suite, service)  # fails if the service had died on its own
        self.restart_seconds.append(time.time() - moment)
        return moment


@pytest.mark.timeout(420)  # 100-200 s on this shared 2-core machine: the restarts dominate
async def test_random_kills_lose_no_job(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    files = FileServer()
    # Four 64 KiB pieces, 0.25 s apart: about a second of configuring per job.
    dataset_url = files.add("/d.csv", b"a\n" + b"1\n" * (128 * 1024), delay_seconds=0.25)
    extra = {
        "C2D_ALLOW_PRIVATE_INPUT_HOSTS": "1",  # the file server is on 127.0.0.1
        "C2D_ENGINE_RETRY_SECONDS": "120",
        "C2D_LOG_LEVEL": "warning",
    }
    began = time.monotonic()
    kills = Kills()
    followed: dict[str, Followed] = {}
    changed = asyncio.Event()  # set by every Watch message a follower receives
    job_ended = asyncio.Event()  # set when a follower sees its job's terminal status
    starting = True
    async with local_suite(tmp_path / "state", extra_env=extra) as suite:
        channel = await _signed_channel(suite.provider_address)
        compute = provider_grpc.ComputeServiceStub(channel)

        async def details(job_id: str) -> pb.GetJobDetailsResponse:
            request = pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id=job_id)
            return await _retrying(lambda: compute.GetJobDetails(request, timeout=10))

        async def follow(job: Followed) -> None:
            """Watch from the last sequence seen, again after every cut, until the terminal status."""
            while not JobStatus(job.status).is_terminal:
                request = pb.WatchRequest(
                    consumer_address=CONSUMER, job_id=job.job_id, after_sequence=job.sequences[-1]
                )
                try:
                    async for message in compute.Watch(request, timeout=30):
                        job.sequences.append(message.event.sequence)
                        job.status = message.event.status
                        changed.set()
                        if JobStatus(job.status).is_terminal:
                            job_ended.set()
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in RETRYABLE:
                        raise
                    await asyncio.sleep(0.1)
                if not JobStatus(job.status).is_terminal:
                    job.watch_calls += 1

        followers: list[asyncio.Task[None]] = []

        async def start_jobs(did: str) -> None:
            nonlocal starting
            index = 0
            while index < MAX_JOBS and (
                index < MIN_JOBS or kills.confirmed != TARGETS or len(kills.moments) < MIN_KILLS
            ):
                seconds = rng.uniform(0.3, 1.2)
                code = (
                    f"import time\nprint('job {index}', flush=True)\ntime.sleep({seconds:.2f})\n"
                    f"open('/data/outputs/done.txt', 'w').write('{index}')\n"
                )
                if index % FAILING_EVERY == FAILING_EVERY - 1:
                    code += "raise SystemExit(3)\n"
                request = pb.StartRequest(
                    consumer_address=CONSUMER,
                    dataset_did=did,
                    raw_algorithm=pb.RawAlgorithm(code=code.encode()),
                    request_id=f"crash-{index}",  # a retried Start after a crash is the same job
                )
                attempts = 0

                async def start(r: pb.StartRequest = request) -> pb.StartResponse:
                    nonlocal attempts
                    attempts += 1
                    return await compute.Start(r, timeout=10)

                response = await _retrying(start)
                job = Followed(
                    index, response.job_id, [response.job.sequence], response.job.status, attempts > 1
                )
                followed[job.job_id] = job
                followers.append(asyncio.create_task(follow(job)))
                index += 1
                # Keep a few jobs queued behind the engine's two slots, no more.
                while True:
                    job_ended.clear()
                    if sum(not JobStatus(j.status).is_terminal for j in followed.values()) < 4:
                        break
                    await job_ended.wait()
                await asyncio.sleep(rng.uniform(0.0, 0.4))
            starting = False

        async def kill_and_confirm(service: str) -> None:
            """Kills the service; every pair the stored histories then show it hit is confirmed."""
            unfinished = [j.job_id for j in followed.values() if not JobStatus(j.status).is_terminal]
            moment = await kills.kill(suite, service)
            for job_id in unfinished:
                status = stored_status_at((await details(job_id)).history, moment)
                if status in PHASES:
                    kills.confirmed.add((service, status))

        async def kill_in_every_phase() -> None:
            """Random kills when due; between them, aimed ones while some pair is unconfirmed."""
            random_left = RANDOM_KILLS
            next_random = time.monotonic() + rng.uniform(0.2, 1.5)
            # Jobs whose follower's view turned out older than the stored status (a stream cut
            # by a kill and not yet resumed): not aimed at again before they see something new.
            stale: dict[str, int] = {}
            while True:
                changed.clear()  # before reading the statuses: any later change ends the wait below
                unfinished = [j for j in followed.values() if not JobStatus(j.status).is_terminal]
                if kills.confirmed == TARGETS and random_left == 0:
                    return
                if not starting and not unfinished:
                    return  # out of jobs: the assertions below say which pairs were never hit
                if random_left and time.monotonic() >= next_random:
                    random_left -= 1
                    await kill_and_confirm(rng.choice(SERVICES))
                    next_random = time.monotonic() + rng.uniform(0.2, 1.5)
                    continue
                aims = [
                    (service, job)
                    for job in unfinished
                    if job.status in PHASES and stale.get(job.job_id) != job.sequences[-1]
                    for service in SERVICES
                    if (service, job.status) not in kills.confirmed
                ]
                if not aims:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), timeout=0.2)
                    continue
                # The service that would hit the most new pairs; the short phases first (a job
                # is seen running far more often than configuring or publishing).
                gains = {service: {job.status for s, job in aims if s == service} for service, _ in aims}
                service = max(
                    gains,
                    key=lambda s: (len(gains[s]), bool(gains[s] - {JobStatus.RUNNING}), rng.random()),
                )
                job = min((j for s, j in aims if s == service), key=lambda j: j.status == JobStatus.RUNNING)
                phase = job.status
                if (await details(job.job_id)).job.status != phase:
                    stale[job.job_id] = job.sequences[-1]
                    continue
                await kill_and_confirm(service)
                if (service, phase) not in kills.confirmed:  # it had moved on just before the kill
                    stale[job.job_id] = job.sequences[-1]

        tasks: list[asyncio.Task[None]] = []  # the starter
        try:
            async with ProviderClient(suite.provider_address, CONSUMER_KEY) as client:
                did = await client.publish_asset(dataset_ddo("d", [dataset_url]))
            tasks.append(asyncio.create_task(start_jobs(did)))
            await kill_in_every_phase()
            await tasks[0]
            async with asyncio.timeout(60):
                await asyncio.gather(*followers)
            finals = {job_id: await details(job_id) for job_id in followed}
            stored_ids = set()
            async with ProviderClient(suite.provider_address, CONSUMER_KEY) as client:
                async for job in client.list_all():
                    stored_ids.add(job.job_id)
                contents: dict[str, bytes] = {}
                stdout: dict[str, bytes] = {}
                for job_id, final in finals.items():
                    outputs = [r for r in final.job.results if r.name == "done.txt"]
                    if _fails(followed[job_id].index):
                        # A failed algorithm's logs are published (and what it wrote before failing).
                        logs = [r for r in final.job.results if r.name == "algorithm.stdout.log"]
                        assert len(logs) == 1, (followed[job_id].index, list(final.job.results))
                        target = tmp_path / "downloads" / job_id / "stdout.log"
                        stdout[job_id] = (
                            await download_result(client, job_id, logs[0], target)
                        ).path.read_bytes()
                    assert len(outputs) == 1, (followed[job_id].index, list(final.job.results))
                    target = tmp_path / "downloads" / job_id / "done.txt"
                    contents[job_id] = (
                        await download_result(client, job_id, outputs[0], target)
                    ).path.read_bytes()
        finally:
            for task in [*followers, *tasks]:
                task.cancel()
            await channel.close()
            files.close()
    elapsed = time.monotonic() - began

    assert len(followed) >= MIN_JOBS
    assert len(kills.moments) >= MIN_KILLS, f"only {len(kills.moments)} kills"
    assert stored_ids == set(followed), "the stored jobs are not exactly the jobs started"
    for job_id, final in finals.items():
        job, watched = final.job, followed[job_id]
        expected = JobStatus.ALGORITHM_FAILED if _fails(watched.index) else JobStatus.FINISHED
        assert job.status == expected, (watched.index, job.status, job.status_text)
        if expected is JobStatus.ALGORITHM_FAILED:
            assert job.exit_code == 3, (watched.index, job.exit_code)
            assert stdout[job_id] == f"job {watched.index}\n".encode(), stdout[job_id]
        assert contents[job_id] == str(watched.index).encode(), (
            f"job {watched.index} published {contents[job_id]!r}, another job's result"
        )
        history = [e.sequence for e in final.history]
        assert history == list(range(1, len(history) + 1)), (watched.index, history)
        assert final.history[-1].status == expected
        # The client's view, stitched from every resumed stream: each event once, in order, to
        # the end. It begins with the Start reply: the registration (event 1), unless the Start
        # was retried after a cut, whose reply is the job as it was then.
        first = 1 if not watched.start_retried else watched.sequences[0]
        assert watched.sequences == list(range(first, len(history) + 1)), (
            watched.index,
            watched.sequences,
            watched.watch_calls,
        )
        assert watched.status == expected

    # Every kill, in the phases the stored histories put some job in at that moment.
    landed = {
        (service, status)
        for moment, service in kills.moments
        for final in finals.values()
        if (status := stored_status_at(final.history, moment)) in PHASES
    }
    missing = sorted((s, JobStatus(p).name) for s, p in TARGETS - landed)
    assert not missing, f"no kill of these services landed in these phases: {missing}"
    hit = ", ".join(f"{s} {JobStatus(p).name}" for s, p in sorted(kills.confirmed))
    restarts = zip(kills.moments, kills.restart_seconds, strict=True)
    print(
        f"\n{len(followed)} jobs; {len(kills.moments)} kills (restarts took "
        f"{', '.join(f'{service} {seconds:.1f}' for (_, service), seconds in restarts)} s); "
        f"pairs hit: {hit}; {sum(j.watch_calls for j in followed.values())} Watch calls; "
        f"{elapsed:.0f} s"
    )
