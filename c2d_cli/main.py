"""`c2d`: start, watch, list, stop, logs and results of compute jobs; publish assets; run the demo.

The provider's address comes from --provider or C2D_PROVIDER_ADDRESS (default 127.0.0.1:50051).
Every call is signed with your Ethereum key: the file --key-file, else C2D_KEY (hex), else the file
C2D_KEY_FILE, else ~/.config/c2d/key (created on first use; fine for local use, not for a funded
account). The same key pays for orders and creates datatokens on chain (c2d_cli.chain_commands).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shlex
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc

from c2d.common.v1 import job_pb2, job_status_pb2
from c2d_cli import chain_parsers, download
from c2d_cli.client import ChecksumMismatch, ProviderClient, status_name
from c2d_cli.download import UnsafeResultName
from c2d_common.signing import address_of
from c2d_common.status import JobStatus

DEFAULT_KEY_FILE = Path("~/.config/c2d/key")
SAMPLES = Path(__file__).parent / "samples"


def _out(line: str = "") -> None:
    print(line, flush=True)


# --- helpers --------------------------------------------------------------------------------------


def read_key(path: Path, create: bool = False) -> str:
    """A private key from a file (64 hex digits); with create, a new one if the file is absent."""
    path = path.expanduser()
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("0x" + os.urandom(32).hex() + "\n")
        print(f"c2d: created a new key in {path}", file=sys.stderr)
    key = path.read_text().strip()
    if len(key.removeprefix("0x")) != 64:
        raise SystemExit(f"c2d: {path} does not hold a private key (64 hex digits)")
    return key


def resolve_key(key_file: str | None) -> str:
    """The key to sign with: `key_file` (--key-file: what the command line says wins over the
    environment), else C2D_KEY, else the file C2D_KEY_FILE, else the default file (created)."""
    if key_file:
        return read_key(Path(key_file))
    if os.environ.get("C2D_KEY"):
        return os.environ["C2D_KEY"]
    if os.environ.get("C2D_KEY_FILE"):
        return read_key(Path(os.environ["C2D_KEY_FILE"]))
    return read_key(DEFAULT_KEY_FILE, create=True)


def dataset_ddo(
    name: str,
    urls: list[str],
    allow_raw: bool = True,
    trusted: list[dict[str, str]] | None = None,
    trusted_publishers: list[str] | None = None,
    datatoken: str = "",
    timeout: int = 0,
    allow_network: bool = False,
    pins: Pins | None = None,
) -> dict[str, Any]:
    """A dataset with one compute service. A dataset that allows raw algorithms lets every consumer
    run any code on it and read back what it prints, so `c2d publish` allows them only with
    --allow-raw, and every caller here says allow_raw explicitly. (The default stays True for the
    scripts that publish their own file for their own raw algorithm: tests/e2e and bench/.)"""
    files = [_file_entry(url, (pins or {}).get(url)) for url in urls]
    service: dict[str, Any] = {
        "type": "compute",
        "files": files,
        "timeout": timeout,
        "compute": {
            "allowRawAlgorithm": allow_raw,
            "allowNetworkAccess": allow_network,
            "publisherTrustedAlgorithms": trusted or [],
            "publisherTrustedAlgorithmPublishers": trusted_publishers or [],
        },
    }
    if datatoken:
        service["datatokenAddress"] = datatoken
    return {
        "metadata": {"name": name, "type": "dataset", "description": f"{name}, published with c2d"},
        "services": [service],
    }


def algorithm_ddo(
    name: str,
    urls: list[str],
    entrypoint: str,
    runtime: str,
    datatoken: str = "",
    pins: Pins | None = None,
) -> dict[str, Any]:
    service: dict[str, Any] = {"type": "access", "files": [_file_entry(u, (pins or {}).get(u)) for u in urls]}
    if datatoken:
        service["datatokenAddress"] = datatoken
    return {
        "metadata": {
            "name": name,
            "type": "algorithm",
            "algorithm": {"container": {"entrypoint": entrypoint, "runtime": runtime}},
        },
        "services": [service],
    }


# A remote file's declared sha256 and, where known, size: url -> (sha256, size or None).
Pins = dict[str, tuple[str, int | None]]
PIN_TIMEOUT_SECONDS = 60


def _file_entry(url: str, pin: tuple[str, int | None] | None = None) -> dict[str, Any]:
    """A DDO file; a local file gets its sha256 and size, a remote one what `pin` says: that pins
    it (an algorithm can only be trusted by DID when every file has a checksum, and the engine
    refuses bytes that differ)."""
    entry: dict[str, Any] = {"url": url}
    path = _local_path(url)
    if path is not None:
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as source:
            while block := source.read(1024 * 1024):
                digest.update(block)
                size += len(block)
        entry["checksum"] = digest.hexdigest()
        entry["contentLength"] = size
    elif pin is not None:
        entry["checksum"] = pin[0]
        if pin[1] is not None:
            entry["contentLength"] = pin[1]
    return entry


def pin_remote_files(urls: list[str], declared: list[str]) -> Pins:
    """The sha256 of each remote file: the one declared (--sha256, one per file, in order; `-`
    for a local file or one to leave unpinned), else, for http(s), computed by downloading it once
    (streamed, so any size fits in memory). s3:// and ipfs:// files need a declared one."""
    if declared and len(declared) != len(urls):
        raise SystemExit(f"c2d: give one --sha256 per file ({len(urls)}), or none; `-` skips a file")
    pins: Pins = {}
    for index, url in enumerate(urls):
        given = declared[index] if declared else ""
        if given == "-" or _local_path(url) is not None:
            continue
        if given:
            if not re.fullmatch(r"[0-9a-f]{64}", given.lower()):
                raise SystemExit(f"c2d: --sha256 {given[:80]!r} is not a sha256 (64 hex digits)")
            pins[url] = (given.lower(), None)
        elif urlparse(url).scheme in ("http", "https"):
            pins[url] = _download_digest(url)
        else:
            raise SystemExit(
                f"c2d: cannot pin {url}: c2d downloads only http(s) files to hash them; give its "
                "sha256 with --sha256 (or --no-pin)"
            )
    return pins


def _download_digest(url: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=PIN_TIMEOUT_SECONDS) as response:
            while block := response.read(1024 * 1024):
                digest.update(block)
                size += len(block)
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"c2d: could not download {url} to pin it ({exc}); give its sha256 with --sha256, or --no-pin"
        ) from None
    print(f"c2d: pinned {url}: sha256 {digest.hexdigest()}, {size} bytes", file=sys.stderr)
    return digest.hexdigest(), size


def _local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(parsed.path)
    return None


def to_url(path_or_url: str) -> str:
    if urlparse(path_or_url).scheme in ("http", "https", "s3", "ipfs", "file"):
        return path_or_url
    path = Path(path_or_url).expanduser().absolute()
    if not path.is_file():
        raise SystemExit(f"c2d: {path_or_url} is neither a file nor a URL")
    return path.as_uri()


def parse_params(pairs: list[str], raw_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(raw_json) if raw_json else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"c2d: --param {pair!r} must be KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _elapsed(start: float) -> str:
    return f"{time.monotonic() - start:6.2f}s"


# --- commands -------------------------------------------------------------------------------------


async def cmd_publish(client: ProviderClient, args: argparse.Namespace) -> int:
    if args.ddo:
        if args.files or args.name:
            raise SystemExit("c2d: --ddo publishes the DDO as written: give no files and no --name")
        try:
            written = json.loads(Path(args.ddo).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"c2d: cannot read the DDO in {args.ddo}: {exc}") from None
        if not isinstance(written, dict):
            raise SystemExit(f"c2d: {args.ddo} holds no JSON object")
        _out(await client.publish_asset(written))
        return 0
    if not args.files or not args.name:
        raise SystemExit("c2d: publish needs files (or URLs) and --name, or a DDO with --ddo FILE")
    urls = [to_url(p) for p in args.files]
    # An algorithm is pinned unless told not to (trust by DID needs it); a dataset when asked.
    pin = args.pin if args.pin is not None else args.type == "algorithm"
    pins = pin_remote_files(urls, args.sha256 or []) if pin or args.sha256 else {}
    if args.type == "dataset":
        try:
            trusted = [await client.trusted_algorithm(did) for did in args.trust_algorithm or []]
        except ValueError as exc:
            raise SystemExit(f"c2d: {exc}") from None
        if args.allow_raw and args.no_raw:
            raise SystemExit("c2d: --allow-raw and --no-raw contradict each other")
        if not (args.allow_raw or trusted or args.trust_publisher):
            # A DDO cannot be changed once published: a dataset that permits no algorithm is useless.
            raise SystemExit(
                "c2d: this dataset would permit no algorithm: trust one (--trust-algorithm DID, "
                "--trust-publisher ADDRESS) or let consumers send their own code (--allow-raw)"
            )
        ddo = dataset_ddo(
            args.name,
            urls,
            allow_raw=args.allow_raw,
            trusted=trusted,
            trusted_publishers=[p.lower() for p in args.trust_publisher or []],
            datatoken=args.datatoken,
            timeout=args.timeout,
            allow_network=args.allow_network,
            pins=pins,
        )
    else:
        ddo = algorithm_ddo(
            args.name, urls, args.entrypoint, args.runtime, datatoken=args.datatoken, pins=pins
        )
    did = await client.publish_asset(ddo)
    _out(did)
    return 0


async def start_job(client: ProviderClient, args: argparse.Namespace) -> str:
    dataset_dids = []
    for item in args.dataset:
        if item.startswith("did:"):
            dataset_dids.append(item)
        else:
            # The consumer publishes its own file for its own algorithm: the new dataset permits that
            # algorithm only (the raw code it sends, or the algorithm asset as it is now).
            url = to_url(item)
            name = Path(urlparse(url).path).name or "dataset"
            if args.algorithm.startswith("did:"):
                try:
                    trusted = [await client.trusted_algorithm(args.algorithm)]
                except ValueError as exc:
                    raise SystemExit(f"c2d: {exc}") from None
                ddo = dataset_ddo(name, [url], allow_raw=False, trusted=trusted)
            else:
                ddo = dataset_ddo(name, [url], allow_raw=True)
            did = await client.publish_asset(ddo)
            _out(f"published {item} as {did}")
            dataset_dids.append(did)
    params = parse_params(args.param or [], args.params_json)
    entrypoint = shlex.split(args.entrypoint) if args.entrypoint else []
    orders = {}
    for pair in args.order or []:
        did, sep, tx = pair.partition("=")
        if not sep:
            raise SystemExit(f"c2d: --order {pair!r} must be DID=TX_ID")
        orders[did] = tx
    if args.algorithm.startswith("did:"):
        response = await client.start(
            dataset_dids,
            algorithm_did=args.algorithm,
            environment_id=args.env,
            parameters=params,
            request_id=args.request_id,
            orders=orders,
        )
    else:
        if urlparse(args.algorithm).scheme in ("http", "https"):
            with urllib.request.urlopen(args.algorithm, timeout=60) as reply:
                code = reply.read()
        else:
            code = Path(args.algorithm).read_bytes()
        response = await client.start(
            dataset_dids,
            raw_code=code,
            entrypoint=entrypoint,
            runtime=args.runtime,
            environment_id=args.env,
            parameters=params,
            request_id=args.request_id,
            orders=orders,
        )
    _out(f"job {response.job_id} started")
    return response.job_id


async def watch_job(client: ProviderClient, job_id: str, show_logs: bool = True) -> job_pb2.Job | None:
    """Prints each status change as it happens (and the algorithm's output); answers the final job."""
    start = time.monotonic()
    final: job_pb2.Job | None = None
    log_task = None
    if show_logs:

        async def print_logs() -> None:
            async for chunk in client.get_logs(job_id, follow=True):
                if chunk.stream != job_pb2.LOG_STREAM_SYSTEM:
                    for line in chunk.data.decode(errors="replace").splitlines():
                        _out(f"         | {line}")

        log_task = asyncio.create_task(print_logs())
    async for response in client.watch(job_id):
        event = response.event
        _out(f"[{_elapsed(start)}] {event.status:>2} {status_name(event.status):<24} {event.status_text}")
        if response.HasField("job"):
            final = response.job
    if log_task is not None:
        try:
            await asyncio.wait_for(log_task, 10)
        except TimeoutError:
            log_task.cancel()
    return final


def describe(job: job_pb2.Job) -> None:
    _out(f"job        {job.job_id}")
    _out(f"status     {job.status} {status_name(job.status)}: {job.status_text}")
    _out(f"owner      {job.owner}")
    _out(f"datasets   {', '.join(job.dataset_dids)}")
    _out(f"algorithm  {job.algorithm_did or '(raw)'}")
    _out(f"env        {job.environment_id}")
    if job.HasField("exit_code"):
        _out(f"exit code  {job.exit_code}{' (out of memory)' if job.out_of_memory else ''}")
    for result in job.results:
        kind = "log" if result.kind == job_pb2.RESULT_KIND_LOG else "output"
        _out(f"  {kind:<6} {result.name:<40} {result.size:>12} B  sha256 {result.sha256[:16]}…")


async def download_all(client: ProviderClient, job: job_pb2.Job, folder: Path) -> None:
    """Every result under folder/outputs and folder/logs, each checksum verified, a line per file."""
    await download.download_all(client, job, folder, report=_out)


async def cmd_start(client: ProviderClient, args: argparse.Namespace) -> int:
    job_id = await start_job(client, args)
    if not args.watch:
        return 0
    final = await watch_job(client, job_id)
    return 0 if final is not None and final.status == JobStatus.FINISHED else 1


async def cmd_watch(client: ProviderClient, args: argparse.Namespace) -> int:
    final = await watch_job(client, args.job_id, show_logs=not args.quiet)
    return 0 if final is not None and final.status == JobStatus.FINISHED else 1


async def cmd_status(client: ProviderClient, args: argparse.Namespace) -> int:
    details = await client.get_job_details(args.job_id)
    describe(details.job)
    _out("history")
    for event in details.history:
        moment = event.time.ToDatetime().strftime("%H:%M:%S.%f")[:-3]
        _out(
            f"  #{event.sequence:<3} {moment} {event.status:>2} "
            f"{status_name(event.status):<24} {event.status_text}"
        )
    return 0


async def cmd_list(client: ProviderClient, args: argparse.Namespace) -> int:
    statuses = []
    for status in args.status or []:
        statuses.append(
            int(status)
            if status.isdigit()
            else job_status_pb2.JobStatus.Value("JOB_STATUS_" + status.upper())
        )
    count = 0
    async for job in client.list_all(statuses):
        created = job.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        _out(f"{job.job_id}  {created}  {job.status:>2} {status_name(job.status):<24} {job.status_text}")
        count += 1
        if args.limit and count >= args.limit:
            break
    return 0


async def cmd_stop(client: ProviderClient, args: argparse.Namespace) -> int:
    job = await client.stop(args.job_id)
    _out(f"job {job.job_id}: {job.status} {status_name(job.status)} ({job.status_text})")
    return 0


async def cmd_logs(client: ProviderClient, args: argparse.Namespace) -> int:
    async for chunk in client.get_logs(args.job_id, follow=args.follow):
        sys.stdout.buffer.write(chunk.data)
        sys.stdout.flush()
    return 0


async def cmd_results(client: ProviderClient, args: argparse.Namespace) -> int:
    details = await client.get_job_details(args.job_id)
    folder = Path(args.output or f"c2d-results/{args.job_id}")
    await download_all(client, details.job, folder)
    return 0


async def cmd_publish_results(client: ProviderClient, args: argparse.Namespace) -> int:
    compute: dict[str, Any] | None = None
    if args.allow_raw or args.trust_publisher:
        compute = {
            "allowRawAlgorithm": args.allow_raw,
            "publisherTrustedAlgorithmPublishers": [
                client.consumer,
                *(p.lower() for p in args.trust_publisher or []),
            ],
        }
    did = await client.publish_results(args.job_id, args.name, args.file or [], compute)
    _out(did)
    return 0


async def cmd_address(client: ProviderClient, args: argparse.Namespace) -> int:
    nonce = await client.get_nonce()
    _out(f"you:      {client.consumer} (last nonce accepted here: {nonce.nonce})")
    _out(f"provider: {nonce.provider_address} at {client.address}, chain {nonce.chain_id or 'none'}")
    return 0


async def cmd_asset(client: ProviderClient, args: argparse.Namespace) -> int:
    _out(json.dumps(await client.get_asset(args.did), indent=2, sort_keys=True))
    return 0


async def cmd_checksums(client: ProviderClient, args: argparse.Namespace) -> int:
    try:
        entry = await client.trusted_algorithm(args.did)
    except ValueError as exc:
        raise SystemExit(f"c2d: {exc}") from None
    _out(json.dumps(entry, indent=2))
    return 0


async def cmd_initialize(client: ProviderClient, args: argparse.Namespace) -> int:
    algorithm = args.algorithm if args.algorithm and args.algorithm.startswith("did:") else ""
    response = await client.initialize_compute(args.dataset, algorithm, args.env)
    if not response.quotes:
        _out("this environment is free: no order is needed")
        return 0
    from google.protobuf import json_format

    for quote in response.quotes:
        _out(json.dumps(json_format.MessageToDict(quote), indent=2))
    return 0


async def cmd_sign(client: ProviderClient, args: argparse.Namespace) -> int:
    """Prints a request as JSON with its auth filled in, for buf curl, grpcurl or any other client."""
    from google.protobuf import json_format, message_factory

    from c2d.provider.v1 import service_pb2
    from c2d_common.signing import NonceClock, method_name, sign_request

    name = method_name(args.method)
    service_name, _, rpc = name.rpartition(".")
    try:
        service = service_pb2.DESCRIPTOR.services_by_name[service_name.rpartition(".")[2]]
        method = service.methods_by_name[rpc]
    except KeyError:
        raise SystemExit(f"c2d: no provider method {args.method!r}") from None
    request_type = message_factory.GetMessageClass(method.input_type)
    request = json_format.Parse(args.json or "{}", request_type())
    if "auth" not in method.input_type.fields_by_name:
        raise SystemExit(f"c2d: {name} is not a signed call")
    for field in ("consumer_address", "publisher_address"):
        if field in method.input_type.fields_by_name and not getattr(request, field):
            setattr(request, field, client.consumer)
    last = (await client.get_nonce()).nonce
    nonce = max(last + 1, NonceClock().next())
    sign_request(request, name, client.provider_address, client.private_key, nonce)
    _out(json_format.MessageToJson(request, preserving_proto_field_name=True, indent=None))
    return 0


async def cmd_envs(client: ProviderClient, args: argparse.Namespace) -> int:
    for env in await client.get_environments():
        network = "network" if env.network_allowed else "no network"
        _out(
            f"{env.id}: {env.cpus:g} CPU, {env.memory_bytes // 2**20} MiB memory, "
            f"{env.disk_bytes // 2**20} MiB disk, {env.max_duration_seconds} s max, {network}"
            f"{', free' if env.free else ''} — {env.description}"
        )
    return 0


# --- the parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c2d", description="Compute-to-Data: run algorithms where the data lives."
    )
    parser.add_argument(
        "--provider",
        default=os.environ.get("C2D_PROVIDER_ADDRESS", "127.0.0.1:50051"),
        help="the provider's host:port (env C2D_PROVIDER_ADDRESS)",
    )
    parser.add_argument(
        "--key-file",
        help="your Ethereum private key, which signs every call (else the key itself in C2D_KEY, else "
        "the file C2D_KEY_FILE, else ~/.config/c2d/key, created on first use)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="start the suite locally, run a sample job, print the result, stop")
    demo.add_argument("--state-dir", help="keep the demo's state here instead of a temporary folder")

    services = sub.add_parser("services", help="run provider, operator and engine here until Ctrl-C")
    services.add_argument("--state-dir", default="c2d-state")
    services.add_argument("--provider-port", type=int, default=50051)
    services.add_argument("--operator-port", type=int, default=50052)
    services.add_argument("--engine-port", type=int, default=50053)
    services.add_argument(
        "--metrics-base-port",
        type=int,
        default=9101,
        help="Prometheus /metrics of provider, operator, engine on this port and the next two (0: none)",
    )

    publish = sub.add_parser("publish", help="publish a dataset or an algorithm; prints its DID")
    publish.add_argument("files", nargs="*", help="local files or URLs")
    publish.add_argument(
        "--ddo",
        metavar="FILE",
        help="publish this DDO (JSON, Ocean's v4 shape) as it is written, instead of files and options",
    )
    publish.add_argument("--name")
    publish.add_argument("--type", choices=("dataset", "algorithm"), default="dataset")
    publish.add_argument(
        "--allow-raw",
        action="store_true",
        help="dataset: let any consumer run raw algorithms (code sent with start) on it",
    )
    # Raw algorithms used to be allowed unless --no-raw; refusing them is the default now.
    publish.add_argument("--no-raw", action="store_true", help=argparse.SUPPRESS)
    publish.add_argument(
        "--trust-algorithm",
        action="append",
        metavar="DID",
        help="dataset: trust this algorithm as it is now (its checksums are pinned)",
    )
    publish.add_argument(
        "--trust-publisher",
        action="append",
        metavar="ADDRESS",
        help="dataset: trust this publisher's algorithms",
    )
    publish.add_argument("--datatoken", default="", help="the service's datatoken address (paid use)")
    publish.add_argument(
        "--timeout", type=int, default=0, help="dataset: how long an order lasts (0: forever)"
    )
    publish.add_argument(
        "--allow-network", action="store_true", help="dataset: may run in environments with network"
    )
    publish.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="declare each remote file's sha256 (http(s) files are downloaded once to hash them); "
        "on for algorithms (trust by DID needs it), off for datasets",
    )
    publish.add_argument(
        "--sha256",
        action="append",
        metavar="HEX",
        help="the sha256 of each file, in order (`-` for none); needed to pin s3:// and ipfs:// files",
    )
    publish.add_argument("--entrypoint", default="python3 $ALGO", help="algorithm: its command line")
    publish.add_argument("--runtime", default="python3", help="algorithm: its runtime")

    start = sub.add_parser("start", help="start a job")
    start.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="DID|FILE|URL",
        help="a dataset (repeat for several); a file or URL is published first",
    )
    start.add_argument(
        "--algorithm",
        required=True,
        metavar="DID|FILE|URL",
        help="an algorithm asset's DID, or code from a file or URL (a raw algorithm)",
    )
    start.add_argument("--entrypoint", help='raw algorithm command line, default "python3 $ALGO"')
    start.add_argument("--runtime", default="", help="raw algorithm runtime, default python3")
    start.add_argument("--param", action="append", metavar="KEY=VALUE", help="an algorithm parameter")
    start.add_argument("--params-json", help="algorithm parameters as a JSON object")
    start.add_argument("--env", default="", help="compute environment id (see `c2d envs`)")
    start.add_argument("--request-id", default="", help="makes a retried start return the same job")
    start.add_argument(
        "--order",
        action="append",
        metavar="DID=TX_ID",
        help="the order paying for an asset (paid environments)",
    )
    start.add_argument("--watch", action="store_true", help="follow the job until it ends")

    for name, help_text in (
        ("watch", "follow a job's progress live"),
        ("status", "a job's details and history"),
        ("stop", "stop a job"),
        ("logs", "print a job's logs"),
        ("results", "download a job's results, verifying checksums"),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("job_id")
        if name == "watch":
            command.add_argument(
                "--quiet", action="store_true", help="status changes only, no algorithm output"
            )
        if name == "logs":
            command.add_argument(
                "-f", "--follow", action="store_true", help="keep following until the job ends"
            )
        if name == "results":
            command.add_argument("-o", "--output", help="folder (default c2d-results/JOB_ID)")

    listing = sub.add_parser("list", help="your jobs, newest first")
    listing.add_argument("--status", action="append", help="only this status (number or name, e.g. finished)")
    listing.add_argument("--limit", type=int, default=0)

    sub.add_parser("envs", help="the compute environments on offer")
    sub.add_parser("address", help="your address, your last nonce, and the provider's address")
    asset = sub.add_parser("asset", help="an asset's public DDO (its files' locations stay private)")
    asset.add_argument("did")
    checksums = sub.add_parser(
        "checksums", help="an algorithm's publisherTrustedAlgorithms entry (filesChecksum, container)"
    )
    checksums.add_argument("did")
    results_asset = sub.add_parser(
        "publish-results",
        help="publish a finished job's outputs as a new dataset you own (input for later jobs)",
    )
    results_asset.add_argument("job_id")
    results_asset.add_argument("--name", default="")
    results_asset.add_argument("--file", action="append", metavar="NAME", help="only this output (repeat)")
    results_asset.add_argument("--allow-raw", action="store_true", help="let raw algorithms run on it")
    results_asset.add_argument(
        "--trust-publisher", action="append", metavar="ADDRESS", help="also trust this publisher's algorithms"
    )
    sign = sub.add_parser(
        "sign",
        help="print a request as JSON, signed, for buf curl or grpcurl: "
        "c2d sign c2d.provider.v1.ComputeService/List '{}'",
    )
    sign.add_argument("method", help="e.g. c2d.provider.v1.ComputeService/Start")
    sign.add_argument("json", nargs="?", default="{}", help="the request as JSON (your address is filled in)")
    initialize = sub.add_parser("initialize", help="what each asset's order must carry (paid environments)")
    initialize.add_argument("--dataset", action="append", required=True, metavar="DID")
    initialize.add_argument("--algorithm", default="", metavar="DID")
    initialize.add_argument("--env", default="")
    chain_parsers.add_parsers(sub)
    return parser


COMMANDS = {
    "publish": cmd_publish,
    "start": cmd_start,
    "watch": cmd_watch,
    "status": cmd_status,
    "list": cmd_list,
    "stop": cmd_stop,
    "logs": cmd_logs,
    "results": cmd_results,
    "envs": cmd_envs,
    "address": cmd_address,
    "checksums": cmd_checksums,
    "asset": cmd_asset,
    "initialize": cmd_initialize,
    "sign": cmd_sign,
    "publish-results": cmd_publish_results,
    "order": lambda client, args: _chain_commands().cmd_order(client, args),
}


def _chain_commands() -> Any:
    from c2d_cli import chain_commands  # web3 and eth_account: imported for the chain commands only

    return chain_commands


async def run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from c2d_cli.demo import run_demo

        return await run_demo(Path(args.state_dir) if args.state_dir else None)
    if args.command == "services":
        from c2d_cli.demo import run_services

        return await run_services(
            Path(args.state_dir),
            args.provider_port,
            args.operator_port,
            args.engine_port,
            args.metrics_base_port,
            # The one who starts the services publishes on them (file:// data of this folder too).
            publishers=[address_of(resolve_key(args.key_file))],
        )
    if args.command in chain_parsers.WITHOUT_PROVIDER:
        command = _chain_commands().WITHOUT_PROVIDER[args.command]
        return await command(resolve_key(args.key_file), args)
    async with ProviderClient(args.provider, resolve_key(args.key_file)) as client:
        return await COMMANDS[args.command](client, args)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = asyncio.run(run(args))
    except grpc.aio.AioRpcError as exc:
        print(f"c2d: {exc.code().name}: {exc.details()}", file=sys.stderr)
        code = 2
    except (ChecksumMismatch, UnsafeResultName) as exc:
        print(f"c2d: {exc}", file=sys.stderr)
        code = 3
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
