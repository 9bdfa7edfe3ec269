"""pytest fixtures for tests that need the chain. Import the ones a test module uses:

    from tests.chain.fixtures import ocean_chain, order_checker  # noqa: F401  (pytest fixtures)

`ocean_chain` is the process's one anvil with Ocean's contracts (started and deployed on first
use), rolled back after each test to the state it had before it (evm_snapshot / evm_revert: blocks,
balances, the clock). Skips, saying why, when anvil is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from provider_svc.infra.chain import OrderChecker
from tests.chain.anvil import OceanChain, shared_ocean_chain


@pytest.fixture(scope="session")
def ocean_chain_session() -> OceanChain:
    try:
        return shared_ocean_chain()
    except LookupError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def ocean_chain(ocean_chain_session: OceanChain) -> Iterator[OceanChain]:
    snapshot = ocean_chain_session.snapshot()
    try:
        yield ocean_chain_session
    finally:
        ocean_chain_session.revert(snapshot)


@pytest_asyncio.fixture
async def order_checker(ocean_chain: OceanChain) -> AsyncIterator[OrderChecker]:
    """An OrderChecker on the test chain, signing as `ocean_chain.provider`, 1 confirmation."""
    async with OrderChecker(ocean_chain.chain_settings()) as checker:
        yield checker
