"""List: newest first, in pages that neither repeat nor skip, filtered by status, the caller's jobs only;
and Start's idempotency on request_id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from c2d.common.v1 import job_pb2
from c2d.operator.v1 import request_response_pb2 as opb
from c2d.operator.v1 import service_pb2_grpc as operator_grpc
from c2d.provider.v1 import request_response_pb2 as pb
from c2d_common.server import insecure_channel
from c2d_common.status import TERMINAL_STATUSES, JobStatus
from engine_svc.config import EngineSettings
from tests.conftest import requires_bwrap
from tests.harness import CONSUMER, NOBODY, OTHER_CONSUMER, PUBLISHER, Suite, running_suite

pytestmark = [requires_bwrap, pytest.mark.sandbox]

T = 30
JOB_TIMEOUT = 90
SUCCEEDS = b"open('/data/outputs/out.txt', 'w').write('ok')\n"
FAILS = b"import sys\nsys.exit(3)\n"
SLEEPS = b"import time\ntime.sleep(60)\n"


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


async def publish_dataset(suite: Suite, root: Path) -> str:
    data = root / "data.csv"
    data.write_text("a\n1\n")
    ddo = {
        "metadata": {"name": "data", "type": "dataset"},
        "services": [
            {"type": "compute", "files": [{"url": data.as_uri()}], "compute": {"allowRawAlgorithm": True}}
        ],
    }
    request = pb.PublishAssetRequest(publisher_address=PUBLISHER, ddo=struct(ddo))
    return (await suite.assets.PublishAsset(request, timeout=T)).did


async def start(
    suite: Suite, consumer: str, did: str, code: bytes = SUCCEEDS, request_id: str = ""
) -> pb.StartResponse:
    request = pb.StartRequest(
        consumer_address=consumer,
        dataset_did=did,
        raw_algorithm=pb.RawAlgorithm(code=code),
        request_id=request_id,
    )
    return await suite.compute.Start(request, timeout=T)


async def wait_terminal(suite: Suite, consumer: str, job_id: str) -> job_pb2.Job:
    async with asyncio.timeout(JOB_TIMEOUT):
        async for message in suite.compute.Watch(pb.WatchRequest(consumer_address=consumer, job_id=job_id)):
            if message.event.status in TERMINAL_STATUSES:
                break
    request = pb.GetJobDetailsRequest(consumer_address=consumer, job_id=job_id)
    return (await suite.compute.GetJobDetails(request, timeout=T)).job


async def list_all(
    suite: Suite, consumer: str, page_size: int, statuses: list[int] | None = None
) -> list[pb.ListResponse]:
    """Every page, following next_page_token to the end."""
    pages: list[pb.ListResponse] = []
    token = ""
    while True:
        request = pb.ListRequest(
            consumer_address=consumer, page_size=page_size, page_token=token, statuses=statuses or []
        )
        page = await suite.compute.List(request, timeout=T)
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 100, "List never ends"


def ids(pages: list[pb.ListResponse]) -> list[str]:
    return [job.job_id for page in pages for job in page.jobs]


@dataclass
class Listing:
    suite: Suite
    # CONSUMER's jobs in the order they were created; index 0 is the oldest.
    created: list[str]
    other_created: list[str]
    finished: set[str]
    failed: set[str]
    stopped: set[str]

    @property
    def newest_first(self) -> list[str]:
        return list(reversed(self.created))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def listing(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Listing]:
    root = tmp_path_factory.mktemp("listing")
    async with running_suite(root, engine_settings=EngineSettings(max_concurrent_jobs=4)) as suite:
        did = await publish_dataset(suite, root)
        # Seven jobs of CONSUMER: 0, 2, 4 finish; 1, 3, 5 fail with exit code 3; 6 is stopped.
        codes = [SUCCEEDS, FAILS, SUCCEEDS, FAILS, SUCCEEDS, FAILS, SLEEPS]
        created: list[str] = []
        other_created: list[str] = []
        for index, code in enumerate(codes):
            created.append((await start(suite, CONSUMER, did, code)).job_id)
            if index in (2, 5):  # another consumer's jobs, in between
                other_created.append((await start(suite, OTHER_CONSUMER, did)).job_id)
        # (Stop's own answer is checked in test_stop_answers_the_stopped_job.)
        await suite.compute.Stop(pb.StopRequest(consumer_address=CONSUMER, job_id=created[6]), timeout=120)
        for job_id in created:
            await wait_terminal(suite, CONSUMER, job_id)
        for job_id in other_created:
            await wait_terminal(suite, OTHER_CONSUMER, job_id)
        yield Listing(
            suite=suite,
            created=created,
            other_created=other_created,
            finished={created[0], created[2], created[4]},
            failed={created[1], created[3], created[5]},
            stopped={created[6]},
        )


module_loop = pytest.mark.asyncio(loop_scope="module")


@module_loop
async def test_jobs_ended_as_planned(listing: Listing) -> None:
    jobs = {
        j.job_id: j
        for j in (await listing.suite.compute.List(pb.ListRequest(consumer_address=CONSUMER))).jobs
    }
    for job_id in listing.finished:
        assert jobs[job_id].status == JobStatus.FINISHED
    for job_id in listing.failed:
        assert jobs[job_id].status == JobStatus.ALGORITHM_FAILED
        assert jobs[job_id].exit_code == 3
    for job_id in listing.stopped:
        assert jobs[job_id].status == JobStatus.STOPPED


@module_loop
@pytest.mark.parametrize("page_size", [1, 2, 3, 6, 7, 8, 1000, 0])
async def test_pages_are_newest_first_without_duplicates_or_gaps(listing: Listing, page_size: int) -> None:
    pages = await list_all(listing.suite, CONSUMER, page_size)
    assert ids(pages) == listing.newest_first
    effective = page_size or 50
    expected_pages = max(1, -(-len(listing.created) // effective))
    assert len(pages) == expected_pages
    for page in pages[:-1]:
        assert len(page.jobs) == effective
        assert page.next_page_token
    assert not pages[-1].next_page_token
    assert pages[-1].jobs  # never an empty last page


@module_loop
async def test_seven_jobs_in_pages_of_three(listing: Listing) -> None:
    pages = await list_all(listing.suite, CONSUMER, 3)
    assert [len(p.jobs) for p in pages] == [3, 3, 1]
    assert [[j.job_id for j in p.jobs] for p in pages] == [
        listing.newest_first[0:3],
        listing.newest_first[3:6],
        listing.newest_first[6:7],
    ]
    created = [j.created_at.ToDatetime() for p in pages for j in p.jobs]
    assert created == sorted(created, reverse=True)


@module_loop
async def test_a_page_token_can_be_used_again(listing: Listing) -> None:
    compute = listing.suite.compute
    first = await compute.List(pb.ListRequest(consumer_address=CONSUMER, page_size=3), timeout=T)
    again = [
        await compute.List(
            pb.ListRequest(consumer_address=CONSUMER, page_size=3, page_token=first.next_page_token),
            timeout=T,
        )
        for _ in range(2)
    ]
    assert again[0] == again[1]
    assert [j.job_id for j in again[0].jobs] == listing.newest_first[3:6]


@module_loop
@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([JobStatus.FINISHED], "finished"),
        ([JobStatus.ALGORITHM_FAILED], "failed"),
        ([JobStatus.STOPPED], "stopped"),
        ([JobStatus.FINISHED, JobStatus.STOPPED], "finished stopped"),
        ([JobStatus.FINISHED, JobStatus.ALGORITHM_FAILED, JobStatus.STOPPED], "finished failed stopped"),
        ([JobStatus.RUNNING], ""),
        ([JobStatus.QUEUED, JobStatus.SYSTEM_ERROR], ""),
    ],
    ids=["finished", "failed", "stopped", "finished-or-stopped", "all-three", "running", "none-match"],
)
@pytest.mark.parametrize("page_size", [2, 0])
async def test_filter_by_status(listing: Listing, statuses: list[int], expected: str, page_size: int) -> None:
    wanted: set[str] = set().union(*(getattr(listing, name) for name in expected.split()))
    pages = await list_all(listing.suite, CONSUMER, page_size, [int(s) for s in statuses])
    listed = ids(pages)
    assert listed == [job_id for job_id in listing.newest_first if job_id in wanted]
    for page in pages:
        assert all(job.status in statuses for job in page.jobs)


@module_loop
async def test_each_consumer_sees_only_their_own_jobs(listing: Listing) -> None:
    mine = await list_all(listing.suite, CONSUMER, 2)
    theirs = await list_all(listing.suite, OTHER_CONSUMER, 2)
    assert set(ids(mine)) == set(listing.created)
    assert ids(theirs) == list(reversed(listing.other_created))
    assert all(job.owner == CONSUMER for page in mine for job in page.jobs)
    assert all(job.owner == OTHER_CONSUMER for page in theirs for job in page.jobs)
    nobody = NOBODY
    assert ids(await list_all(listing.suite, nobody, 0)) == []


@module_loop
async def test_an_address_in_another_case_is_the_same_consumer(listing: Listing) -> None:
    pages = await list_all(listing.suite, CONSUMER.upper().replace("0X", "0x"), 0)
    assert ids(pages) == listing.newest_first


@module_loop
async def test_another_consumers_page_token_does_not_reveal_their_jobs(listing: Listing) -> None:
    theirs = await listing.suite.compute.List(
        pb.ListRequest(consumer_address=OTHER_CONSUMER, page_size=1), timeout=T
    )
    assert theirs.next_page_token
    mine = await listing.suite.compute.List(
        pb.ListRequest(consumer_address=CONSUMER, page_token=theirs.next_page_token), timeout=T
    )
    assert all(job.owner == CONSUMER for job in mine.jobs)


@module_loop
async def test_listed_results_do_not_show_where_they_are_stored(listing: Listing) -> None:
    pages = await list_all(listing.suite, CONSUMER, 0)
    results = [r for page in pages for job in page.jobs for r in job.results]
    assert results, "finished jobs have results"
    assert all(not r.location for r in results)


@module_loop
async def test_the_operator_lists_every_owner_when_asked_for_none(listing: Listing) -> None:
    async with insecure_channel(f"127.0.0.1:{listing.suite.operator.port}") as channel:
        operator = operator_grpc.OperatorServiceStub(channel)
        everyone = await operator.ListJobs(opb.ListJobsRequest(page_size=1000), timeout=T)
        assert everyone.jobs[0].job_id == listing.newest_first[0]
        assert {j.job_id for j in everyone.jobs} == set(listing.created) | set(listing.other_created)
        # The operator sees where results are stored; only the provider hides it.
        assert any(r.location for j in everyone.jobs for r in j.results)


# --- Start is idempotent on request_id (each test on a suite of its own) ----------------------------


async def test_start_twice_with_one_request_id_is_one_job(tmp_path: Path) -> None:
    async with running_suite(tmp_path) as suite:
        did = await publish_dataset(suite, tmp_path)
        first = await start(suite, CONSUMER, did, request_id="retry-me")
        second = await start(suite, CONSUMER, did, request_id="retry-me")
        assert first.job_id == second.job_id == first.job.job_id == second.job.job_id
        await wait_terminal(suite, CONSUMER, first.job_id)
        # Still the same job once it has ended.
        third = await start(suite, CONSUMER, did, request_id="retry-me")
        assert third.job_id == first.job_id
        assert third.job.status == JobStatus.FINISHED
        # A request that differs (another algorithm) is not a retry: refused, never answered with
        # the first job as if the new algorithm had run.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start(suite, CONSUMER, did, code=FAILS, request_id="retry-me")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        listed = await suite.compute.List(pb.ListRequest(consumer_address=CONSUMER), timeout=T)
        assert [j.job_id for j in listed.jobs] == [first.job_id]


async def test_concurrent_retries_of_one_start_are_one_job(tmp_path: Path) -> None:
    async with running_suite(tmp_path) as suite:
        did = await publish_dataset(suite, tmp_path)
        responses = await asyncio.gather(
            *(start(suite, CONSUMER, did, request_id="burst") for _ in range(10))
        )
        assert len({r.job_id for r in responses}) == 1
        listed = await suite.compute.List(pb.ListRequest(consumer_address=CONSUMER), timeout=T)
        assert [j.job_id for j in listed.jobs] == [responses[0].job_id]
        await wait_terminal(suite, CONSUMER, responses[0].job_id)


async def test_request_ids_are_per_consumer_and_distinct_ids_are_distinct_jobs(tmp_path: Path) -> None:
    async with running_suite(tmp_path) as suite:
        did = await publish_dataset(suite, tmp_path)
        mine = await start(suite, CONSUMER, did, request_id="r" * 128)  # the longest allowed
        theirs = await start(suite, OTHER_CONSUMER, did, request_id="r" * 128)
        other_id = await start(suite, CONSUMER, did, request_id="another")
        no_id_1 = await start(suite, CONSUMER, did)
        no_id_2 = await start(suite, CONSUMER, did)
        mine_again = await start(suite, CONSUMER.upper().replace("0X", "0x"), did, request_id="r" * 128)
        assert mine_again.job_id == mine.job_id
        assert theirs.job.owner == OTHER_CONSUMER
        assert len({mine.job_id, theirs.job_id, other_id.job_id, no_id_1.job_id, no_id_2.job_id}) == 5
        listed = await suite.compute.List(pb.ListRequest(consumer_address=CONSUMER), timeout=T)
        assert [j.job_id for j in listed.jobs] == [
            no_id_2.job_id,
            no_id_1.job_id,
            other_id.job_id,
            mine.job_id,
        ]
        for job in listed.jobs:
            await wait_terminal(suite, CONSUMER, job.job_id)
        await wait_terminal(suite, OTHER_CONSUMER, theirs.job_id)


async def test_stop_answers_the_stopped_job(tmp_path: Path) -> None:
    """Regression: Stop used to answer the job as read before its STOPPED event was stored (the
    registry's watch paired the newest event with an older read of the job); fixed in 071177d."""
    async with running_suite(tmp_path, engine_settings=EngineSettings(max_concurrent_jobs=1)) as suite:
        did = await publish_dataset(suite, tmp_path)
        blocker = await start(suite, CONSUMER, did, code=SLEEPS)  # holds the engine's only slot
        answers = []
        for _ in range(40):
            job_id = (await start(suite, CONSUMER, did, code=SLEEPS)).job_id
            await asyncio.sleep(0.05)  # let the engine take the job (it waits for the slot)
            stop = pb.StopRequest(consumer_address=CONSUMER, job_id=job_id)
            answered = (await suite.compute.Stop(stop, timeout=120)).job
            details = await suite.compute.GetJobDetails(
                pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id=job_id), timeout=T
            )
            assert details.job.status == JobStatus.STOPPED
            answers.append((answered.status, answered.sequence, details.job.sequence))
        await suite.compute.Stop(
            pb.StopRequest(consumer_address=CONSUMER, job_id=blocker.job_id), timeout=120
        )
        stale = [a for a in answers if a[0] != JobStatus.STOPPED or a[1] != a[2]]
        assert stale == [], f"{len(stale)} of {len(answers)} Stop answers were stale: {stale[:5]}"
