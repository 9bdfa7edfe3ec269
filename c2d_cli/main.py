"""`c2d`: start, watch, list, stop, logs and results of compute jobs; publish assets; run the demo.

The provider's address comes from --provider or C2D_PROVIDER_ADDRESS (default 127.0.0.1:50051); the
consumer's address from --address or C2D_CONSUMER_ADDRESS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shlex
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc

from c2d.common.v1 import job_pb2, job_status_pb2
from c2d_cli.client import ChecksumMismatch, ProviderClient, status_name
from c2d_common.status import JobStatus

DEV_ADDRESS = "0x00000000000000000000000000000000000c2dc2"
SAMPLES = Path(__file__).parent / "samples"


def _out(line: str = "") -> None:
    print(line, flush=True)


# --- helpers --------------------------------------------------------------------------------------


def dataset_ddo(
    name: str, urls: list[str], allow_raw: bool = True, trusted: list[str] | None = None
) -> dict[str, Any]:
    files = []
    for url in urls:
        entry: dict[str, Any] = {"url": url}
        path = _local_path(url)
        if path is not None:
            entry["checksum"] = hashlib.sha256(path.read_bytes()).hexdigest()
            entry["contentLength"] = path.stat().st_size
        files.append(entry)
    return {
        "metadata": {"name": name, "type": "dataset", "description": f"{name}, published with c2d"},
        "services": [
            {
                "type": "compute",
                "files": files,
                "timeout": 3600,
                "compute": {
                    "allowRawAlgorithm": allow_raw,
                    "allowNetworkAccess": False,
                    "publisherTrustedAlgorithms": [{"did": did} for did in (trusted or [])],
                    "publisherTrustedAlgorithmPublishers": [],
                },
            }
        ],
    }


def algorithm_ddo(name: str, urls: list[str], entrypoint: str, runtime: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "type": "algorithm",
            "algorithm": {"container": {"entrypoint": entrypoint, "runtime": runtime}},
        },
        "services": [{"type": "access", "files": [{"url": u} for u in urls]}],
    }


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
    urls = [to_url(p) for p in args.files]
    if args.type == "dataset":
        ddo = dataset_ddo(args.name, urls, allow_raw=not args.no_raw, trusted=args.trust_algorithm)
    else:
        ddo = algorithm_ddo(args.name, urls, args.entrypoint, args.runtime)
    did = await client.publish_asset(ddo)
    _out(did)
    return 0


async def start_job(client: ProviderClient, args: argparse.Namespace) -> str:
    dataset_dids = []
    for item in args.dataset:
        if item.startswith("did:"):
            dataset_dids.append(item)
        else:
            url = to_url(item)
            did = await client.publish_asset(dataset_ddo(Path(urlparse(url).path).name or "dataset", [url]))
            _out(f"published {item} as {did}")
            dataset_dids.append(did)
    params = parse_params(args.param or [], args.params_json)
    entrypoint = shlex.split(args.entrypoint) if args.entrypoint else []
    if args.algorithm.startswith("did:"):
        response = await client.start(
            dataset_dids,
            algorithm_did=args.algorithm,
            environment_id=args.env,
            parameters=params,
            request_id=args.request_id,
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
    for result in job.results:
        sub = "logs" if result.kind == job_pb2.RESULT_KIND_LOG else "outputs"
        destination = folder / sub / result.name
        last = [0.0]

        def progress(done: int, total: int, name: str = result.name, last: list[float] = last) -> None:
            now = time.monotonic()
            if sys.stderr.isatty() and (now - last[0] > 0.1 or done == total):
                last[0] = now
                percent = 100 * done / total if total else 100
                sys.stderr.write(f"\r  {name:<40} {percent:5.1f}% of {total} B")
                sys.stderr.flush()

        download = await client.download(job.job_id, result, destination, progress)
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        resumed = f" (resumed at {download.resumed_from} B)" if download.resumed_from else ""
        _out(f"  {destination}  {download.size} B  sha256 verified{resumed}")


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
        "--address",
        default=os.environ.get("C2D_CONSUMER_ADDRESS", DEV_ADDRESS),
        help="your Ethereum address (env C2D_CONSUMER_ADDRESS)",
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
    publish.add_argument("files", nargs="+", help="local files or URLs")
    publish.add_argument("--name", required=True)
    publish.add_argument("--type", choices=("dataset", "algorithm"), default="dataset")
    publish.add_argument("--no-raw", action="store_true", help="dataset: refuse raw algorithms")
    publish.add_argument(
        "--trust-algorithm", action="append", metavar="DID", help="dataset: trust this algorithm"
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
}


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
        )
    async with ProviderClient(args.provider, args.address) as client:
        return await COMMANDS[args.command](client, args)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = asyncio.run(run(args))
    except grpc.aio.AioRpcError as exc:
        print(f"c2d: {exc.code().name}: {exc.details()}", file=sys.stderr)
        code = 2
    except ChecksumMismatch as exc:
        print(f"c2d: {exc}", file=sys.stderr)
        code = 3
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
