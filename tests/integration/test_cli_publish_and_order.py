"""The `c2d` CLI as a publisher and a consumer of paid jobs would drive it, end to end: the CLI in
its own process, the suite on real ports, Ocean's v4 contracts on anvil.

The publisher creates a data NFT and its datatoken (`c2d create-datatoken`, through Ocean's
ERC721Factory), mints one to the consumer (`c2d mint-datatokens`) and publishes a paid dataset; the
consumer orders it (`c2d order`: InitializeCompute's quote, then startOrder) and runs the job with
`c2d start --order`. Raw algorithms are opt-in for published datasets (`--allow-raw`), except the
`c2d start --dataset ./file` path that publishes the consumer's own file for its own algorithm.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio
from web3 import Web3

from c2d_common.ocean_contracts import ONE_DATATOKEN
from engine_svc.config import DEFAULT_ENVIRONMENTS, EngineSettings
from provider_svc.config import ProviderSettings
from provider_svc.infra.chain import OrderChecker
from provider_svc.server import build_provider
from tests.chain.anvil import OceanChain, shared_ocean_chain
from tests.conftest import requires_bwrap
from tests.harness import (
    CONSUMER,
    CONSUMER_KEY,
    OTHER_CONSUMER_KEY,
    PROVIDER,
    PROVIDER_KEY,
    PUBLISHER,
    PUBLISHER_KEY,
    Suite,
    running_suite,
)
from tests.servers.http_files import FileServer

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.asyncio(loop_scope="module")]

PAID = replace(DEFAULT_ENVIRONMENTS[0], id="paid", description="paid", free=False)
FREE = replace(DEFAULT_ENVIRONMENTS[0], id="free")
ALGORITHM = "import os\nopen('/data/outputs/seen.txt', 'w').write(' '.join(os.listdir('/data/inputs')))\n"


@dataclass
class Market:
    suite: Suite
    chain: OceanChain
    folder: Path  # data, keys and algorithm files

    def key_file(self, name: str) -> Path:
        return self.folder / f"{name}.key"


@pytest.fixture(scope="module")
def chain() -> OceanChain:
    try:
        return shared_ocean_chain()
    except LookupError as exc:
        pytest.skip(str(exc))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def market(chain: OceanChain, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Market]:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "data.csv").write_text("a,b\n1,2\n")
    (folder / "algo.py").write_text(ALGORITHM)
    for name, key in (("publisher", PUBLISHER_KEY), ("consumer", CONSUMER_KEY)):
        (folder / f"{name}.key").write_text(key + "\n")
    checker = OrderChecker(chain.chain_settings(provider_key=PROVIDER_KEY))
    try:
        async with running_suite(
            folder / "suite",
            # The algorithm files some tests serve come from 127.0.0.1.
            engine_settings=EngineSettings(environments=(PAID, FREE), allow_private_input_hosts=True),
            orders=checker,
        ) as suite:
            yield Market(suite, chain, folder)
    finally:
        await checker.close()


@pytest.fixture(autouse=True)
def rolled_back(chain: OceanChain) -> Iterator[None]:
    snapshot = chain.snapshot()
    for address in (PUBLISHER, CONSUMER):
        chain.fund_eth(address)  # gas money, as anyone using a chain needs
    yield
    chain.revert(snapshot)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        return self.out.strip().splitlines()[-1]


async def c2d(
    market: Market,
    *args: str,
    key: str = "consumer",
    provider: str = "",
    env: dict[str, str] | None = None,
) -> Run:
    """The CLI in a process of its own, as a user runs it. The key comes from --key-file while
    C2D_KEY names another: the command line must win."""
    environment = {
        **os.environ,
        "C2D_KEY": OTHER_CONSUMER_KEY,
        "C2D_CHAIN_RPC_URL": market.chain.rpc_url,
        "C2D_ERC721_FACTORY": market.chain.factory.address,
        **(env or {}),
    }
    environment = {k: v for k, v in environment.items() if v}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "c2d_cli.main",
        "--provider",
        provider or market.suite.provider_address,
        "--key-file",
        str(market.key_file(key)),
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=market.folder,
    )
    out, err = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def _paid_dataset(market: Market, provider: str = "") -> tuple[str, str]:
    """The publisher, with the CLI only: a datatoken, one minted to the consumer, a paid dataset."""
    created = await c2d(market, "create-datatoken", "--name", "Weather data", key="publisher")
    assert created.code == 0, created.err
    datatoken = created.last_line
    assert Web3.is_checksum_address(datatoken), created.out
    minted = await c2d(market, "mint-datatokens", datatoken, "--to", CONSUMER, key="publisher")
    assert minted.code == 0, minted.err
    assert market.chain.balance_of(datatoken, CONSUMER) == ONE_DATATOKEN
    published = await c2d(
        market,
        "publish",
        "data.csv",
        "--name",
        "paid weather",
        "--datatoken",
        datatoken,
        "--allow-raw",
        key="publisher",
        provider=provider,
    )
    assert published.code == 0, published.err
    return published.last_line, datatoken


def _job_id(run: Run) -> str:
    return next(line.split()[1] for line in run.out.splitlines() if line.startswith("job "))


# --- the paid path ----------------------------------------------------------------------------------


async def test_publisher_and_consumer_run_a_paid_job_with_the_cli_alone(market: Market) -> None:
    did, datatoken = await _paid_dataset(market)

    ordered = await c2d(market, "order", "--dataset", did, "--env", "paid")
    assert ordered.code == 0, ordered.err
    order = ordered.last_line
    assert order.startswith(f"{did}=0x") and len(order.split("=")[1]) == 66
    assert market.chain.balance_of(datatoken, CONSUMER) == 0, "the order took the datatoken"

    started = await c2d(
        market,
        "start",
        "--dataset",
        did,
        "--algorithm",
        "algo.py",
        "--env",
        "paid",
        "--order",
        order,
        "--watch",
    )
    assert started.code == 0, started.out + started.err
    assert "FINISHED" in started.out

    # The order paid for that job: starting again with it (a lost answer, retried) is that job.
    again = await c2d(
        market, "start", "--dataset", did, "--algorithm", "algo.py", "--env", "paid", "--order", order
    )
    assert again.code == 0, again.err
    assert _job_id(again) == _job_id(started)


async def test_an_order_with_a_provider_fee_approves_and_pays_it(market: Market, tmp_path: Path) -> None:
    """A provider whose fee is in OCEAN: `c2d order` approves the datatoken to take it, and the
    provider receives it."""
    fee = ONE_DATATOKEN // 10
    checker = OrderChecker(
        market.chain.chain_settings(
            provider_key=PROVIDER_KEY, provider_fee_token=market.chain.ocean.address, provider_fee_amount=fee
        )
    )
    async with _provider(market, tmp_path, checker) as address:
        did, _ = await _paid_dataset(market, provider=address)
        poor = await c2d(market, "order", "--dataset", did, "--env", "paid", provider=address)
        assert poor.code != 0 and "fees take" in poor.err, poor.err

        market.chain.fund_ocean(CONSUMER, fee)
        provider_before = market.chain.balance_of(market.chain.ocean.address, PROVIDER)
        ordered = await c2d(market, "order", "--dataset", did, "--env", "paid", provider=address)
        assert ordered.code == 0, ordered.err
        paid = market.chain.balance_of(market.chain.ocean.address, PROVIDER)
        assert paid - provider_before == fee
        started = await c2d(
            market, "start", "--dataset", did, "--algorithm", "algo.py", "--env", "paid",
            "--order", ordered.last_line, "--watch", provider=address,
        )  # fmt: skip
        assert started.code == 0 and "FINISHED" in started.out, started.out + started.err


@contextlib.asynccontextmanager
async def _provider(market: Market, state: Path, checker: OrderChecker) -> AsyncIterator[str]:
    """Another provider (its own fee settings) in front of the market's operator and engine."""
    provider = build_provider(
        ProviderSettings(
            listen="127.0.0.1:0",
            operator_address=f"127.0.0.1:{market.suite.operator.port}",
            assets_dir=state / "assets",
            results_dir=market.suite.root / "results",
            file_url_roots=(market.folder,),
            private_key=PROVIDER_KEY,
            publishers=(PUBLISHER,),
        ),
        checker,
    )
    await provider.start()
    try:
        yield f"127.0.0.1:{provider.port}"
    finally:
        await provider.stop()
        await checker.close()


# --- what the chain commands refuse, before sending anything ------------------------------------------


async def test_an_order_without_a_datatoken_sends_nothing(market: Market) -> None:
    created = await c2d(market, "create-datatoken", "--name", "Unsold", key="publisher")
    datatoken = created.last_line
    published = await c2d(
        market,
        "publish",
        "data.csv",
        "--name",
        "unsold",
        "--datatoken",
        datatoken,
        "--allow-raw",
        key="publisher",
    )
    sent_before = market.chain.w3.eth.get_transaction_count(Web3.to_checksum_address(CONSUMER))
    ordered = await c2d(market, "order", "--dataset", published.last_line, "--env", "paid")
    assert ordered.code != 0 and ordered.out == ""
    mint = f"c2d mint-datatokens {datatoken} --to {Web3.to_checksum_address(CONSUMER)}"
    assert "holds 0" in ordered.err and mint in ordered.err
    assert market.chain.w3.eth.get_transaction_count(Web3.to_checksum_address(CONSUMER)) == sent_before


async def test_only_a_minter_mints(market: Market) -> None:
    created = await c2d(market, "create-datatoken", "--name", "Guarded", key="publisher")
    datatoken = created.last_line
    minted = await c2d(market, "mint-datatokens", datatoken, "--to", CONSUMER, "--amount", "5")
    assert minted.code != 0 and "may not mint" in minted.err
    assert market.chain.balance_of(datatoken, CONSUMER) == 0


async def test_a_free_environment_needs_an_order_for_a_priced_dataset_only(market: Market) -> None:
    did, datatoken = await _paid_dataset(market)
    ordered = await c2d(market, "order", "--dataset", did, "--env", "free")
    assert ordered.code == 0, ordered.err
    assert ordered.last_line.startswith(f"{did}=0x")
    assert market.chain.balance_of(datatoken, CONSUMER) == 0, "the order took the datatoken"
    unpriced = await c2d(market, "publish", "data.csv", "--name", "open data", "--allow-raw", key="publisher")
    assert unpriced.code == 0, unpriced.err
    ordered = await c2d(market, "order", "--dataset", unpriced.last_line, "--env", "free")
    assert ordered.code == 0 and ordered.out == "" and "no order is needed" in ordered.err


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["create-datatoken", "--name", "x"], {"C2D_CHAIN_RPC_URL": ""}, "--rpc-url"),
        (["create-datatoken", "--name", "x", "--rpc-url", "ftp://node"], {}, "http(s)://"),
        (["create-datatoken", "--name", "x", "--rpc-url", "http://127.0.0.1:1"], {}, "does not answer"),
        (["create-datatoken", "--name", "x", "--factory", "0x" + "12" * 20], {}, "is no contract"),
        (["create-datatoken", "--name", "x", "--factory", "factory"], {}, "not an Ethereum address"),
        (["create-datatoken", "--name", "x"], {"C2D_ERC721_FACTORY": ""}, "--factory"),
        (["mint-datatokens", "0x" + "12" * 20, "--to", CONSUMER, "--amount", "-5"], {}, "positive number"),
        (["mint-datatokens", "nope", "--to", CONSUMER], {}, "not an Ethereum address"),
        (["mint-datatokens", "0x" + "12" * 20, "--to", CONSUMER, "--amount", "1e-19"], {}, "18 decimals"),
        (["mint-datatokens", "0x" + "12" * 20, "--to", CONSUMER, "--amount", "NaN"], {}, "positive number"),
        (["mint-datatokens", "0x" + "12" * 20, "--to", CONSUMER], {}, "is no contract"),
    ],
    ids=[
        "no node",
        "not http",
        "node down",
        "factory not deployed",
        "factory not an address",
        "no factory known for the chain",
        "negative amount",
        "datatoken not an address",
        "amount below one wei",
        "amount NaN",
        "datatoken not deployed",
    ],
)
async def test_chain_commands_refuse_bad_input_with_what_to_do(
    market: Market, args: list[str], env: dict[str, str], says: str
) -> None:
    run = await c2d(market, *args, key="publisher", env=env)
    assert run.code != 0 and run.out == "" and says in run.err, run.err
    assert "Traceback" not in run.err


async def test_an_order_on_another_provider_s_chain_is_refused(market: Market, tmp_path: Path) -> None:
    """A provider that checks orders on chain 1: the anvil node the consumer names is not it."""
    settings = dataclasses.replace(market.chain.chain_settings(provider_key=PROVIDER_KEY), chain_id=1)
    async with _provider(market, tmp_path, OrderChecker(settings)) as address:
        published = await c2d(
            market, "publish", "data.csv", "--name", "d", "--datatoken", "0x" + "12" * 20, "--allow-raw",
            key="publisher",
            provider=address,
        )  # fmt: skip
        assert published.code == 0, published.err
        ordered = await c2d(
            market, "order", "--dataset", published.last_line, "--env", "paid", provider=address
        )
        assert ordered.code != 0 and "on chain 31337" in ordered.err and "chain 1" in ordered.err


# --- raw algorithms are opt-in --------------------------------------------------------------------------


async def test_a_dataset_published_without_allow_raw_refuses_raw_algorithms(market: Market) -> None:
    useless = await c2d(market, "publish", "data.csv", "--name", "nothing runs", key="publisher")
    assert useless.code != 0 and "--allow-raw" in useless.err and "--trust-algorithm" in useless.err
    published = await c2d(
        market, "publish", "data.csv", "--name", "guarded", "--trust-publisher", PUBLISHER, key="publisher"
    )
    assert published.code == 0, published.err
    started = await c2d(
        market, "start", "--dataset", published.last_line, "--algorithm", "algo.py", "--env", "free"
    )
    assert started.code == 2 and "PERMISSION_DENIED" in started.err and "raw algorithms" in started.err
    # Even when it trusts an algorithm asset: trusting one does not let raw code in.
    algorithm = await c2d(market, "publish", "algo.py", "--type", "algorithm", "--name", "a", key="publisher")
    trusting = await c2d(
        market,
        "publish",
        "data.csv",
        "--name",
        "t",
        "--trust-algorithm",
        algorithm.last_line,
        key="publisher",
    )
    raw = await c2d(
        market, "start", "--dataset", trusting.last_line, "--algorithm", "algo.py", "--env", "free"
    )
    assert raw.code == 2 and "PERMISSION_DENIED" in raw.err
    by_did = await c2d(
        market, "start", "--dataset", trusting.last_line, "--algorithm", algorithm.last_line, "--env", "free",
        "--watch",
    )  # fmt: skip
    assert by_did.code == 0 and "FINISHED" in by_did.out, by_did.out + by_did.err


async def test_start_with_a_local_file_publishes_it_for_the_consumer_s_own_algorithm(market: Market) -> None:
    """The README's quick start: the file is published for the raw algorithm sent with it. (The
    consumer is a listed publisher here, as `c2d services` lists the CLI's own key: file:// data.)"""
    started = await c2d(
        market, "start", "--dataset", "data.csv", "--algorithm", "algo.py", "--env", "free", "--watch"
    )
    assert started.code == 0 and "FINISHED" in started.out, started.out + started.err


# --- pinning remote files -------------------------------------------------------------------------


async def test_an_algorithm_at_a_url_is_pinned_at_publish_so_a_dataset_can_trust_it(market: Market) -> None:
    """`c2d publish --type algorithm URL` downloads the file once and declares its sha256 and size:
    without them no dataset could trust it by DID, and with them the engine refuses other bytes."""
    server = FileServer()
    try:
        code = ALGORITHM.encode()
        url = server.add("/algo.py", code)
        published = await c2d(
            market, "publish", url, "--type", "algorithm", "--name", "remote", key="publisher"
        )
        assert published.code == 0, published.err
        algorithm = published.last_line
        assert f"sha256 {hashlib.sha256(code).hexdigest()}, {len(code)} bytes" in published.err
        dataset = await c2d(
            market,
            "publish",
            "data.csv",
            "--name",
            "trusting",
            "--trust-algorithm",
            algorithm,
            key="publisher",
        )
        assert dataset.code == 0, dataset.err
        start = (
            "start",
            "--dataset",
            dataset.last_line,
            "--algorithm",
            algorithm,
            "--env",
            "free",
            "--watch",
        )
        ran = await c2d(market, *start)
        assert ran.code == 0 and "FINISHED" in ran.out, ran.out + ran.err
        # The same size, other bytes, at the same URL after the dataset trusted it: never runs.
        server.add("/algo.py", code.replace(b"seen.txt", b"seem.txt"))
        swapped = await c2d(market, *start)
        assert swapped.code == 1 and "ALGORITHM_PROVISIONING_FAILED" in swapped.out, swapped.out + swapped.err
    finally:
        server.close()


@pytest.mark.parametrize(
    ("files", "extra", "says"),
    [
        (["s3://bucket/algo.py"], [], "give its sha256 with --sha256"),
        (["s3://bucket/algo.py"], ["--sha256", "abc"], "is not a sha256"),
        (["s3://bucket/a.py", "s3://bucket/b.py"], ["--sha256", "a" * 64], "one --sha256 per file (2)"),
        (["http://127.0.0.1:9/algo.py"], [], "could not download http://127.0.0.1:9/algo.py"),
    ],
    ids=["s3-undeclared", "not-hex", "one-of-two", "unreachable"],
)
async def test_an_algorithm_that_cannot_be_pinned_is_not_published(
    market: Market, files: list[str], extra: list[str], says: str
) -> None:
    published = await c2d(
        market, "publish", *files, "--type", "algorithm", "--name", "unpinned", *extra, key="publisher"
    )
    assert published.code != 0 and says in published.err, published.err
    assert published.out == "", "no DID: nothing was published"


async def test_a_declared_sha256_pins_a_file_c2d_cannot_download(market: Market) -> None:
    digest = hashlib.sha256(b"print(1)\n").hexdigest()
    published = await c2d(
        market,
        "publish",
        "s3://bucket/algo.py",
        "--type",
        "algorithm",
        "--name",
        "declared",
        "--sha256",
        digest.upper(),
        key="publisher",
    )
    assert published.code == 0, published.err
    checksums = await c2d(market, "checksums", published.last_line)
    assert checksums.code == 0, checksums.err
    assert hashlib.sha256(digest.encode()).hexdigest() in checksums.out


# --- a hand-written DDO, and what consumers see of it ---------------------------------------------


async def test_a_hand_written_ddo_is_published_as_written_and_shown_without_its_files(
    market: Market,
) -> None:
    ddo = {
        "metadata": {"name": "two services", "type": "dataset", "description": "written by hand"},
        "services": [
            {"type": "access", "files": [{"url": "https://example.org/secret-location.csv"}]},
            {
                "type": "compute",
                "files": [{"url": "https://example.org/secret-location.csv"}],
                "timeout": 3600,
                "compute": {"allowRawAlgorithm": True},
            },
        ],
    }
    (market.folder / "ddo.json").write_text(json.dumps(ddo))
    published = await c2d(market, "publish", "--ddo", "ddo.json", key="publisher")
    assert published.code == 0, published.err
    did = published.last_line
    shown = await c2d(market, "asset", did)
    assert shown.code == 0, shown.err
    public = json.loads(shown.out)
    assert public["id"] == did and public["metadata"]["description"] == "written by hand"
    assert [s["type"] for s in public["services"]] == ["access", "compute"]
    assert public["services"][1]["timeout"] == 3600
    assert "secret-location" not in shown.out, "a consumer never learns where the data lives"


@pytest.mark.parametrize(
    ("content", "args", "says"),
    [
        ("{not json", [], "cannot read the DDO"),
        ("[1, 2]", [], "holds no JSON object"),
        ('{"metadata": {"name": "x", "type": "dataset"}, "services": []}', [], "invalid DDO: services"),
        ("{}", ["data.csv"], "give no files and no --name"),
    ],
    ids=["not-json", "a-list", "invalid", "with-files"],
)
async def test_a_hand_written_ddo_that_cannot_be_published_says_why(
    market: Market, content: str, args: list[str], says: str
) -> None:
    (market.folder / "bad-ddo.json").write_text(content)
    published = await c2d(market, "publish", "--ddo", "bad-ddo.json", *args, key="publisher")
    assert published.code != 0 and says in published.err, published.err
    assert published.out == ""
