"""`c2d demo` and `c2d services`: the whole suite on this machine, on the embedded defaults."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from c2d_cli.client import ProviderClient
from c2d_cli.main import SAMPLES, _out, dataset_ddo, describe, download_all, read_key, watch_job
from c2d_cli.processes import start_local_suite, stop_local_suite
from c2d_common.signing import address_of
from c2d_common.status import JobStatus


async def run_demo(state_dir: Path | None) -> int:
    temporary = state_dir is None
    root = Path(tempfile.mkdtemp(prefix="c2d-demo-")) if state_dir is None else state_dir
    began = time.monotonic()
    _out("== Compute-to-Data demo ==")
    _out(f"state: {root}")
    _out("starting engine, operator and provider (separate processes, gRPC on loopback)…")
    data_roots = os.pathsep.join([str(SAMPLES.resolve()), str(Path.cwd())])
    # The demo's consumer (and publisher) key lives with its state; every call is signed with it,
    # and it is the one key the provider lets publish (C2D_PUBLISHERS), file:// data included.
    key = read_key(root / "consumer.key", create=True)
    suite = await start_local_suite(
        root, extra_env={"C2D_FILE_URL_ROOTS": data_roots}, publishers=[address_of(key)]
    )
    try:
        _out(
            f"  engine {suite.address('engine')}  operator {suite.address('operator')}  "
            f"provider {suite.provider_address}  (ready in {time.monotonic() - began:.1f} s)"
        )
        async with ProviderClient(suite.provider_address, key) as client:
            _out(f"consumer {client.consumer}: every call is signed (EIP-191) with a fresh nonce")
            envs = await client.get_environments()
            _out(f"environment: {envs[0].id} — {envs[0].description}")
            dataset = SAMPLES / "weather.csv"
            # The demo publishes its own sample for its own raw algorithm; a dataset published with
            # `c2d publish` permits raw algorithms only with --allow-raw.
            did = await client.publish_asset(
                dataset_ddo("Weather stations, 60 days", [dataset.resolve().as_uri()], allow_raw=True)
            )
            _out(f"published the sample dataset {dataset.name} as {did} (raw algorithms allowed)")
            _out("  (the consumer never learns where the file lives; it stays on this machine)")
            algorithm = SAMPLES / "summarize.py"
            response = await client.start(
                [did],
                raw_code=algorithm.read_bytes(),
                parameters={"group_by": "station"},
                request_id="c2d-demo",
            )
            job_id = response.job_id
            _out(f"started job {job_id}: {algorithm.name} on the dataset, in a sandbox without network")
            _out("")
            final = await watch_job(client, job_id)
            _out("")
            if final is None:
                _out("the job's stream ended without a final state")
                return 1
            describe(final)
            if final.status != JobStatus.FINISHED:
                _out("the job did not finish; its logs:")
                async for chunk in client.get_logs(job_id):
                    _out(chunk.data.decode(errors="replace").rstrip())
                return 1
            results_dir = Path.cwd() / "c2d-demo-results" / job_id
            _out("downloading the results (checksums verified):")
            await download_all(client, final, results_dir)
            summary = json.loads((results_dir / "outputs" / "summary.json").read_text())
            _out("")
            _out(f"result: statistics per {summary['group_by']}")
            for key, info in summary["groups"].items():
                temp = info["columns"]["temperature_c"]
                wind = info["columns"]["wind_ms"]
                _out(
                    f"  {key:<8} {info['rows']:>3} rows  temperature mean {temp['mean']:>5} °C "
                    f"(min {temp['min']}, max {temp['max']})  wind mean {wind['mean']} m/s"
                )
            leftovers = list((root / "work").glob(f"{job_id}*"))
            _out(f"sandbox files left after the job: {len(leftovers)}")
            nonce = await client.get_nonce()
            _out(
                f"signed calls: the provider ({nonce.provider_address}) accepted nonces up to "
                f"{nonce.nonce} from you; a replay of any of them is refused"
            )
    finally:
        codes = stop_local_suite(suite)
        _out(f"services stopped (exit codes: {', '.join(f'{k} {v}' for k, v in codes.items())})")
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    _out(f"demo done in {time.monotonic() - began:.1f} s")
    return 0


async def run_services(
    state_dir: Path,
    provider_port: int,
    operator_port: int,
    engine_port: int,
    metrics_base_port: int = 0,
    publishers: list[str] | None = None,
) -> int:
    names = ("provider", "operator", "engine")
    metrics = {name: metrics_base_port + i for i, name in enumerate(names)} if metrics_base_port else None
    suite = await start_local_suite(
        state_dir,
        ports={"provider": provider_port, "operator": operator_port, "engine": engine_port},
        metrics_ports=metrics,
        publishers=publishers or [],
    )
    _out(
        f"provider {suite.provider_address}  operator {suite.address('operator')}  "
        f"engine {suite.address('engine')}"
    )
    _out(f"may publish (C2D_PUBLISHERS): {suite.publishers}; their file:// data from {Path.cwd()}")
    if metrics:
        _out("metrics: " + "  ".join(f"{n} http://127.0.0.1:{p}/metrics" for n, p in metrics.items()))
    _out(f"state and service logs in {state_dir.absolute()}; Ctrl-C stops everything")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        stop_local_suite(suite)
    return 0
