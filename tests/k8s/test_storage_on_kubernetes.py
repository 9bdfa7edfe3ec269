"""S3 on the Kubernetes backend, against a real S3 endpoint (moto's server over HTTP): a dataset
read from a bucket the suite may read, results written to an S3 result store; the credentials
travel only in the job's Secrets, to the pods that use them."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from c2d_common.status import JobStatus
from c2d_common.storage import ResultStoreTarget, S3Credentials, S3Settings, StorageSettings
from engine_svc.infra.kubernetes import KubernetesBackend
from tests.k8s.apiserver import Route
from tests.k8s.cluster import Cluster
from tests.k8s.conftest import needs_bwrap
from tests.k8s.jobs import job_spec, make_runner, run_job
from tests.servers.s3 import (
    ACCESS_KEY,
    REGION,
    RESULT_ACCESS_KEY,
    RESULT_SECRET_KEY,
    SECRET_KEY,
    shared_s3_server,
)

pytestmark = [pytest.mark.sandbox, needs_bwrap]

COUNT = """\
import json, os
data = open('/data/inputs/' + json.loads(os.environ['DIDS'])[0] + '/0').read()
open('/data/outputs/count.txt', 'w').write(str(len(data.split())))
print('counted')
"""


async def test_inputs_from_s3_and_results_to_an_s3_store(cluster: Cluster, tmp_path: Path) -> None:
    s3 = shared_s3_server()
    data = b"1 2 3 4\n"
    inputs = s3.bucket("k8s-inputs")
    results = s3.bucket("k8s-results")
    s3.client().put_object(Bucket=inputs, Key="weather/data.txt", Body=data)
    storage = StorageSettings(
        result_store=ResultStoreTarget.parse(f"s3://{results}/c2d"),
        s3=S3Settings(
            endpoint_url=s3.endpoint_url,
            region=REGION,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            input_buckets=(inputs,),
        ),
        result_credentials=S3Credentials(RESULT_ACCESS_KEY, RESULT_SECRET_KEY),
    )
    secrets: dict[str, dict[str, str]] = {}

    def record_secret(route: Route, obj: dict[str, Any]) -> None:
        if route.plural == "secrets":
            values = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            secrets[obj["metadata"]["name"]] = values | (obj.get("stringData") or {})

    cluster.api.admission.append(record_secret)
    since = s3.mark()
    backend = KubernetesBackend(
        cluster.settings(results_claim=""), results_dir=tmp_path / "unused", storage=storage
    )
    try:
        job_id, seen = await run_job(
            make_runner(backend), job_spec(f"s3://{inputs}/weather/data.txt", COUNT, data=data)
        )
    finally:
        await backend.close()
    keys_used = (s3.keys_used(inputs, since=since), s3.keys_used(results, since=since))
    assert seen.status is JobStatus.FINISHED, seen.statuses
    count = next(r for r in seen.final.results if r.name == "count.txt")
    # Under the job's folder and a random id of this publish (podtools/publish.py's S3Store).
    key = count.location.removeprefix(f"s3://{results}/")
    assert re.fullmatch(rf"c2d/{job_id}/[0-9a-f]{{32}}/outputs/count\.txt", key), count.location
    assert count.sha256 == hashlib.sha256(b"4").hexdigest()
    assert key in s3.keys(results, f"c2d/{job_id}/")
    # A Secret for each podtools pod, none for the algorithm: the datasets' key in the
    # configuration pod's only, the result store's in the publishing pod's only.
    assert len([p for m, p, _ in cluster.api.calls if m == "POST" and p.endswith("/secrets")]) == 2
    holding = {name: " ".join(values.values()) for name, values in secrets.items()}
    with_data_key = [name for name, text in holding.items() if SECRET_KEY in text]
    with_result_key = [name for name, text in holding.items() if RESULT_SECRET_KEY in text]
    assert len(with_data_key) == 1 and "configure" in with_data_key[0], holding.keys()
    assert len(with_result_key) == 1 and "publish" in with_result_key[0], holding.keys()
    assert keys_used == ({ACCESS_KEY}, {RESULT_ACCESS_KEY})
    assert cluster.labelled(job_id) == []


async def test_a_bucket_the_suite_may_not_read_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    s3 = shared_s3_server()
    storage = StorageSettings(
        result_store=ResultStoreTarget.parse("s3://k8s-results/c2d"),
        s3=S3Settings(endpoint_url=s3.endpoint_url, input_buckets=("k8s-inputs",)),
    )
    backend = KubernetesBackend(
        cluster.settings(results_claim=""), results_dir=tmp_path / "unused", storage=storage
    )
    try:
        _, seen = await run_job(make_runner(backend), job_spec("s3://someone-elses/secret.csv", COUNT))
    finally:
        await backend.close()
    assert seen.status is JobStatus.DATA_PROVISIONING_FAILED
    assert "C2D_S3_INPUT_BUCKETS" in seen.final.status_text
    assert not [c for c in cluster.api.calls if c[0] == "POST"]
