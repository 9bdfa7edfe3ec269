"""The signing client against a provider that takes streams in another order than they were sent.

Nonces must strictly increase, and across several connections (or under load) a server may
authenticate calls in any order. The client's answer: a stream's next sibling is signed only once the
provider has authenticated (or refused) it. This server shuffles arrivals on purpose.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from c2d.provider.v1 import request_response_pb2 as pb
from c2d.provider.v1 import service_pb2_grpc as provider_grpc
from c2d_common.server import insecure_channel
from c2d_common.signing import STALE_NONCE_PREFIX, signing_interceptors
from tests.harness import CONSUMER, CONSUMER_KEY, PROVIDER


class ShufflingProvider(provider_grpc.ComputeServiceServicer):
    def __init__(self) -> None:
        self.last = 0
        self.refused = 0
        self.random = random.Random(7)

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchResponse]:
        await asyncio.sleep(self.random.random() * 0.01)  # arrivals overtake each other
        if request.auth.nonce <= self.last:
            self.refused += 1
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"{STALE_NONCE_PREFIX}: {request.auth.nonce}"
            )
        self.last = request.auth.nonce
        await context.send_initial_metadata(())
        yield pb.WatchResponse()


@pytest_asyncio.fixture
async def provider() -> AsyncIterator[tuple[ShufflingProvider, str]]:
    servicer = ShufflingProvider()
    server = grpc.aio.server()
    provider_grpc.add_ComputeServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def test_streams_opened_at_once_are_all_authenticated(provider: tuple[ShufflingProvider, str]) -> None:
    servicer, address = provider
    interceptors = signing_interceptors({CONSUMER: CONSUMER_KEY}, PROVIDER)
    channels = [insecure_channel(address, interceptors) for _ in range(3)]

    async def watch(index: int) -> int:
        stub = provider_grpc.ComputeServiceStub(channels[index % len(channels)])
        request = pb.WatchRequest(consumer_address=CONSUMER, job_id="j")
        return len([m async for m in stub.Watch(request, timeout=30)])

    try:
        received = await asyncio.gather(*(watch(i) for i in range(60)), return_exceptions=True)
    finally:
        for channel in channels:
            await channel.close()
    failed = [r for r in received if not isinstance(r, int)]
    assert not failed, f"{len(failed)} of 60 streams failed, e.g. {failed[0]!r}"
    assert received == [1] * 60
    assert servicer.last > 0 and servicer.refused == 0
