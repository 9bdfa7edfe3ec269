"""Several engines share the work: each job is given to one engine and runs there exactly once,
also when the operator restarts in the middle and drives the jobs again."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from c2d_common.status import JobStatus
from engine_svc.config import EngineSettings
from engine_svc.server import build_engine
from operator_svc.config import OperatorSettings
from operator_svc.server import build_operator
from provider_svc.config import ProviderSettings
from provider_svc.server import build_provider
from tests.conftest import requires_bwrap
from tests.harness import PROVIDER_KEY, PUBLISHER, Suite, signed_channel
from tests.integration import jobs

pytestmark = requires_bwrap

JOBS = 16


async def test_two_engines_run_every_job_exactly_once(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    engines = []
    for name in ("engine-a", "engine-b"):
        settings = replace(
            EngineSettings(),
            listen="127.0.0.1:0",
            work_dir=tmp_path / name / "work",
            results_dir=tmp_path / "results",
            file_url_roots=(tmp_path,),
            max_concurrent_jobs=2,
        )
        server, runner = build_engine(settings)
        await server.start()
        engines.append((server, runner))
    addresses = tuple(f"127.0.0.1:{server.port}" for server, _ in engines)
    operator_settings = OperatorSettings(
        listen="127.0.0.1:0", database_url=f"sqlite:///{tmp_path}/operator.db", engine_addresses=addresses
    )
    operator, registry = await build_operator(operator_settings)
    await operator.start()
    provider = build_provider(
        ProviderSettings(
            listen="127.0.0.1:0",
            operator_address=f"127.0.0.1:{operator.port}",
            assets_dir=tmp_path / "assets",
            results_dir=tmp_path / "results",
            file_url_roots=(tmp_path,),
            private_key=PROVIDER_KEY,
            publishers=(PUBLISHER,),
        )
    )
    await provider.start()
    channel = signed_channel(f"127.0.0.1:{provider.port}")
    suite = Suite(
        tmp_path, engines[0][0], engines[0][1], operator, registry, provider, channel, EngineSettings()
    )
    second_operator = None
    try:
        did = await jobs.publish_dataset(suite, [data])
        code = "import time\ntime.sleep(1.5)\nopen('/data/outputs/ran.txt', 'w').write('once')\n"
        started = await asyncio.gather(*(jobs.start_raw(suite, [did], code) for _ in range(JOBS)))
        job_ids = [job.job_id for job in started]

        # Restart the operator while jobs run: the new one drives them again, on the same engines.
        await jobs.wait_for_status(suite, job_ids[0], JobStatus.RUNNING)
        await operator.stop()
        second_operator, second_registry = await build_operator(
            replace(operator_settings, listen=f"127.0.0.1:{operator.port}")
        )
        await second_operator.start()
        await second_registry.resume_unfinished()

        finals = await asyncio.gather(*(jobs.wait_terminal(suite, job_id) for job_id in job_ids))
        assert [f.status for f in finals] == [JobStatus.FINISHED] * JOBS, [f.status_text for f in finals]

        runs_by_engine = [{job_id for job_id in job_ids if runner.runs.get(job_id)} for _, runner in engines]
        assert runs_by_engine[0] | runs_by_engine[1] == set(job_ids)  # every job ran
        assert not runs_by_engine[0] & runs_by_engine[1]  # and on one engine only
        assert runs_by_engine[0] and runs_by_engine[1]  # both engines took work
        for job in finals:
            assert [r.name for r in job.results if r.kind == jobs.OUTPUT] == ["ran.txt"]
            history = (await jobs.details(suite, job.job_id)).history
            statuses = [e.status for e in history]
            assert statuses.count(JobStatus.RUNNING) == 1, statuses  # never started twice
    finally:
        await channel.close()
        await provider.stop()
        if second_operator is not None:
            await second_operator.stop()
        else:
            await operator.stop()
        for server, _ in engines:
            await server.stop()
