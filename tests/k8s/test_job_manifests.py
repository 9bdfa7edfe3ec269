"""What the Kubernetes backend asks the cluster for: every object validates against the OpenAPI
schemas, every pod meets Pod Security "restricted" and the suite's own promises (read-only root,
no token, limits from the environment, a deadline), and the algorithm's network is closed unless
its environment opens it."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from c2d.common.v1 import job_pb2
from c2d_common.env import ConfigError
from c2d_common.storage import S3Settings, StorageSettings
from engine_svc.domain.model import JobContext
from engine_svc.infra.kubernetes.plan import PlanRefused, configure_plan
from engine_svc.infra.kubernetes.settings import KubernetesSettings
from engine_svc.infra.kubernetes.specs import (
    LABEL_JOB,
    JobManifests,
    Owner,
    algorithm_command,
    parse_result_line,
    parse_usage,
    podtools_command,
)
from tests.k8s.apiserver import restricted_violations
from tests.k8s.jobs import OWNER, SMALL, job_spec
from tests.k8s.schemas import KUBERNETES_VERSION, LATEST_VERSION

JOB_ID = "0123456789abcdef0123456789abcdef"
OWNER_REF = Owner("c2d-" + JOB_ID, "3f1c6d0e-0000-4000-8000-000000000001")
SETTINGS = KubernetesSettings(engine_id="engine-0", storage_class="fast-ssd", image_pull_secrets=("regcred",))


def context(**environment: Any) -> JobContext:
    spec = job_spec("https://data.example.org/weather.csv", "print(1)")
    return JobContext(JOB_ID, OWNER, spec, replace(SMALL, **environment))


def every_object(manifests: JobManifests) -> list[dict[str, Any]]:
    plan, _ = configure_plan(manifests.job, allow_private_hosts=False, storage=StorageSettings())
    return [
        manifests.anchor(),
        manifests.data_volume_claim(OWNER_REF),
        manifests.configure_secret(OWNER_REF, plan, {"C2D_S3_ACCESS_KEY_ID": "key"}),
        manifests.secret("publish", OWNER_REF, {"C2D_S3_SECRET_ACCESS_KEY": "secret"}),
        manifests.algorithm_network_policy(OWNER_REF),
        manifests.configure_network_policy(OWNER_REF, anywhere=False),
        manifests.configure_network_policy(OWNER_REF, anywhere=True),
        manifests.publish_network_policy(OWNER_REF, remote_store=False),
        manifests.publish_network_policy(OWNER_REF, remote_store=True),
        manifests.publish_pod(
            OWNER_REF, 600, False, (), store="s3://results/c2d/" + JOB_ID, quota_bytes=10**9
        ),
        manifests.configure_pod(OWNER_REF, 600, ("C2D_S3_ACCESS_KEY_ID",)),
        manifests.algorithm_pod(
            OWNER_REF, "python:3.11-slim", ["python3", "/data/transformations/algorithm"]
        ),
        manifests.publish_pod(OWNER_REF, 600, True, ("C2D_S3_SECRET_ACCESS_KEY",)),
    ]


def pods(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["labels"]["c2d.io/phase"]: o for o in objects if o["kind"] == "Pod"}


ENVIRONMENTS = {
    "no network": {},
    "network": {"network_allowed": True},
    "gpus": {"gpus": 2},
}


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, LATEST_VERSION])
@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_every_object_validates_against_the_kubernetes_schemas(
    environment: dict[str, Any], version: str
) -> None:
    for obj in every_object(JobManifests(SETTINGS, context(**environment))):
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_every_pod_is_locked_down(environment: dict[str, Any]) -> None:
    every_pod = [
        o for o in every_object(JobManifests(SETTINGS, context(**environment))) if o["kind"] == "Pod"
    ]
    assert len(every_pod) == 4, "both publish pods (S3 store and shared volume) are checked"
    for pod in every_pod:
        phase = pod["metadata"]["labels"]["c2d.io/phase"]
        spec = pod["spec"]
        assert restricted_violations(pod) == [], phase
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        assert spec["restartPolicy"] == "Never"
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["imagePullSecrets"] == [{"name": "regcred"}]
        assert "serviceAccountName" not in spec and "hostNetwork" not in spec
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["privileged"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["runAsUser"] != 0
            resources = container["resources"]
            assert resources["requests"] == resources["limits"]
            assert {"cpu", "memory", "ephemeral-storage"} <= set(resources["limits"])
            # The root is read-only: every writable place is a volume.
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]) or phase == "publish"


def test_the_algorithm_gets_the_environments_resources_and_deadline() -> None:
    env = {
        "cpus": 2.5,
        "memory_bytes": 3 * 1024**3,
        "disk_bytes": 5 * 1024**3,
        "max_duration_seconds": 900,
        "gpus": 2,
    }
    algorithm = pods(every_object(JobManifests(SETTINGS, context(**env))))["algorithm"]
    container = algorithm["spec"]["containers"][0]
    assert container["resources"]["limits"] == {
        "cpu": "2500m",
        "memory": str(3 * 1024**3),
        # /tmp (the smaller of disk and memory) and the log: the disk itself is the job's volume.
        "ephemeral-storage": str(3 * 1024**3 + 64 * 1024**2),
        "nvidia.com/gpu": "2",
    }
    tmp = next(v for v in algorithm["spec"]["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"] == str(3 * 1024**3)
    assert algorithm["spec"]["activeDeadlineSeconds"] == 900
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in algorithm["spec"][
        "tolerations"
    ]
    environment = {e["name"]: e.get("value") for e in container["env"]}
    assert environment["DIDS"] == json.dumps(["did:op:" + "d" * 64])
    assert environment["ALGO"] == "/data/transformations/algorithm"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for read_only in ("/data/inputs", "/data/transformations", "/data/ddos"):
        assert mounts[read_only]["readOnly"] is True
    for writable in ("/data/outputs", "/data/logs"):
        assert mounts[writable]["readOnly"] is False
    assert container["command"][-2:] == ["python3", "/data/transformations/algorithm"]


def test_no_gpu_is_asked_for_where_the_environment_has_none() -> None:
    algorithm = pods(every_object(JobManifests(SETTINGS, context())))["algorithm"]
    assert "nvidia.com/gpu" not in algorithm["spec"]["containers"][0]["resources"]["limits"]
    assert "tolerations" not in algorithm["spec"]


def test_the_algorithm_may_reach_nothing_without_network_and_never_the_cluster_with_it() -> None:
    closed = JobManifests(SETTINGS, context()).algorithm_network_policy(OWNER_REF)["spec"]
    assert closed["podSelector"]["matchLabels"] == {LABEL_JOB: JOB_ID, "c2d.io/phase": "algorithm"}
    assert closed["policyTypes"] == ["Ingress", "Egress"]
    assert closed["egress"] == [] and closed["ingress"] == []

    opened = JobManifests(SETTINGS, context(network_allowed=True)).algorithm_network_policy(OWNER_REF)["spec"]
    assert opened["ingress"] == []
    blocks = [peer["ipBlock"] for rule in opened["egress"] for peer in rule["to"] if "ipBlock" in peer]
    v4 = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(v4["except"])
    dns = next(rule for rule in opened["egress"] if "ports" in rule)
    assert {p["port"] for p in dns["ports"]} == {53}


def test_podtools_pods_never_reach_the_cluster_unless_private_inputs_are_allowed() -> None:
    manifests = JobManifests(SETTINGS, context())
    configure = manifests.configure_network_policy(OWNER_REF, anywhere=False)["spec"]
    assert configure["podSelector"]["matchLabels"]["c2d.io/phase"] == "configure"
    assert configure["ingress"] == []
    v4 = next(p["ipBlock"] for rule in configure["egress"] for p in rule["to"] if "ipBlock" in p)
    assert "169.254.0.0/16" in v4["except"] and "10.0.0.0/8" in v4["except"]
    publish = manifests.publish_network_policy(OWNER_REF, remote_store=False)["spec"]
    assert publish["podSelector"]["matchLabels"]["c2d.io/phase"] == "publish"
    assert publish["egress"] == [] and "Egress" in publish["policyTypes"]
    # Pods that hold storage credentials may reach the cluster (the suite's S3 or IPFS may be
    # there), but never a cloud metadata service and the node credentials it gives out.
    for opened in (
        manifests.configure_network_policy(OWNER_REF, anywhere=True)["spec"],
        manifests.publish_network_policy(OWNER_REF, remote_store=True)["spec"],
    ):
        (rule,) = opened["egress"]
        blocks = {b["ipBlock"]["cidr"]: b["ipBlock"]["except"] for b in rule["to"]}
        assert blocks["0.0.0.0/0"] == ["169.254.0.0/16"]
        assert "fe80::/10" in blocks["::/0"] and "fd00:ec2::/32" in blocks["::/0"]
        assert "ports" not in rule


def test_dataset_locations_reach_only_the_configuration_pod() -> None:
    manifests = JobManifests(SETTINGS, context())
    objects = every_object(manifests)
    secret = next(
        o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-configure")
    )
    plan = json.loads(base64.b64decode(secret["data"]["job.json"]))
    assert plan["datasets"][0]["files"][0]["url"] == "https://data.example.org/weather.csv"
    by_phase = {phase: json.dumps(pod) for phase, pod in pods(objects).items()}
    assert secret["metadata"]["name"] in by_phase["configure"]
    assert secret["metadata"]["name"] not in by_phase["algorithm"]
    assert secret["metadata"]["name"] not in by_phase["publish"]
    for text in by_phase.values():
        assert "data.example.org" not in text


def test_every_object_is_labelled_and_owned_by_the_anchor() -> None:
    for obj in every_object(JobManifests(SETTINGS, context())):
        labels = obj["metadata"]["labels"]
        assert labels[LABEL_JOB] == JOB_ID and labels["c2d.io/engine"] == "engine-0"
        assert labels["app.kubernetes.io/managed-by"] == "c2d-engine"
        if obj["kind"] != "ConfigMap":
            assert obj["metadata"]["ownerReferences"] == [OWNER_REF.reference()]


def test_the_data_volume_is_sized_to_the_environment_in_the_chosen_class() -> None:
    claim = JobManifests(SETTINGS, context(disk_bytes=7 * 1024**3)).data_volume_claim(OWNER_REF)
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == str(7 * 1024**3)
    default_class = JobManifests(KubernetesSettings(), context()).data_volume_claim(OWNER_REF)
    assert "storageClassName" not in default_class["spec"]


def test_podtools_command_lines() -> None:
    configure = podtools_command("configure")
    assert configure[:2] == ["sh", "-c"] and "python3 -m podtools.configure /c2d/job/job.json" in configure[2]
    assert podtools_command("publish", include_outputs=False)[-3:] == ["--store", "/results", "--logs-only"]
    assert "--logs-only" not in podtools_command("publish")
    assert podtools_command("publish", store="s3://b/p/j", quota_bytes=5)[-4:] == [
        "--store",
        "s3://b/p/j",
        "--quota",
        "5",
    ]
    assert algorithm_command(["python3", "a b"])[-2:] == ["python3", "a b"]


def test_results_and_usage_are_read_back() -> None:
    log = 'fetching\nC2D-RESULT {"ok": false}\nconfigure: noise\nC2D-RESULT {"ok": true, "files": []}\n'
    assert parse_result_line(log) == {"ok": True, "files": []}
    assert parse_result_line("no result\n") is None
    assert parse_result_line("C2D-RESULT not json\n") is None
    assert parse_usage("c2d-usage-kib 2048\n") == 2048 * 1024
    assert parse_usage(None) is None and parse_usage("garbage") is None


def test_the_plan_refuses_what_a_pod_cannot_fetch_without_naming_a_location() -> None:
    job = context()
    job.spec.datasets[0].files[0].url = "file:///srv/secret/data.csv"
    with pytest.raises(PlanRefused) as refused:
        configure_plan(job, allow_private_hosts=False, storage=StorageSettings())
    assert refused.value.failed_input == "data" and "/srv/secret" not in str(refused.value)
    job = context()
    job.spec.algorithm.files.append(job_pb2.FileLocation(url="gopher://algo.example.org/x"))
    with pytest.raises(PlanRefused) as refused:
        configure_plan(job, allow_private_hosts=False, storage=StorageSettings())
    assert refused.value.failed_input == "algorithm" and "algo.example.org" not in str(refused.value)


def test_the_plan_carries_the_publishers_method_and_headers() -> None:
    job = context()
    location = job.spec.datasets[0].files[0]
    location.method = "post"
    location.headers["Authorization"] = "Bearer t0ken"
    entry = configure_plan(job, allow_private_hosts=True, storage=StorageSettings())[0]["datasets"][0][
        "files"
    ][0]
    assert entry["method"] == "POST" and entry["headers"] == {"Authorization": "Bearer t0ken"}
    location.headers["Host"] = "elsewhere"
    with pytest.raises(PlanRefused):
        configure_plan(job, allow_private_hosts=True, storage=StorageSettings())


def test_s3_and_ipfs_inputs_are_checked_against_the_storage_settings() -> None:
    job = context()
    job.spec.datasets[0].files[0].url = "s3://private-bucket/data.csv"
    with pytest.raises(PlanRefused) as refused:
        configure_plan(job, allow_private_hosts=False, storage=StorageSettings())
    assert "C2D_S3_INPUT_BUCKETS" in str(refused.value) and "private-bucket" not in str(refused.value)
    allowed = StorageSettings(s3=S3Settings(input_buckets=("private-bucket",)))
    plan, needs_storage = configure_plan(job, allow_private_hosts=False, storage=allowed)
    assert needs_storage and plan["datasets"][0]["files"][0]["url"] == "s3://private-bucket/data.csv"
    assert configure_plan(context(), allow_private_hosts=False, storage=allowed)[1] is False


def test_a_remote_result_store_is_not_mounted() -> None:
    publish = JobManifests(SETTINGS, context()).publish_pod(
        OWNER_REF, 600, True, ("C2D_S3_SECRET_ACCESS_KEY",), store=f"s3://results/c2d/{JOB_ID}"
    )
    spec = publish["spec"]
    assert "initContainers" not in spec
    assert [v["name"] for v in spec["volumes"]] == ["data", "tmp"]
    assert spec["containers"][0]["command"][-2:] == ["--store", f"s3://results/c2d/{JOB_ID}"]


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C2D_K8S_NAMESPACE", "jobs")
    monkeypatch.setenv("C2D_K8S_ENGINE_ID", "engine-1")
    monkeypatch.setenv("C2D_K8S_RUNTIME_IMAGES", '{"python3": "python:3.12-slim", "node": "node:22"}')
    monkeypatch.setenv("C2D_K8S_STORAGE_CLASS", "standard")
    monkeypatch.setenv("C2D_K8S_CONFIGURE_ENV", "C2D_S3_ACCESS_KEY_ID, C2D_S3_SECRET_ACCESS_KEY")
    settings = KubernetesSettings.from_env()
    assert settings.namespace == "jobs" and settings.engine_id == "engine-1"
    assert settings.runtime_images == {"python3": "python:3.12-slim", "node": "node:22"}
    assert settings.configure_env == ("C2D_S3_ACCESS_KEY_ID", "C2D_S3_SECRET_ACCESS_KEY")
    for name, value in [
        ("C2D_K8S_NAMESPACE", "Not_A_Namespace"),
        ("C2D_K8S_RUNTIME_IMAGES", "[1, 2]"),
        ("C2D_K8S_PODTOOLS_MEMORY", "lots"),
        ("C2D_K8S_RUN_AS_USER", "0"),
        ("C2D_K8S_DNS_CIDRS", "169.254.20.10/33"),
        ("C2D_K8S_BLOCKED_CIDRS", "10.0.0.0/8,not-a-cidr"),
        ("C2D_K8S_DNS_NAMESPACE", "Kube_System"),
        ("C2D_K8S_DNS_POD_LABELS", '{"k8s-app": 1}'),
    ]:
        with monkeypatch.context() as patched:
            patched.setenv(name, value)
            with pytest.raises(ConfigError):
                KubernetesSettings.from_env()


def test_dns_for_internet_only_pods_follows_the_cluster_s_dns() -> None:
    """kube-dns by default; OpenShift's DNS pods, or NodeLocal DNSCache's link-local address
    (which the blocked ranges would otherwise cut off), where the settings say so."""
    default = JobManifests(SETTINGS, context(network_allowed=True)).algorithm_network_policy(OWNER_REF)
    (dns,) = [rule for rule in default["spec"]["egress"] if "ports" in rule]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    openshift = replace(
        SETTINGS,
        dns_namespace="openshift-dns",
        dns_pod_labels={"dns.operator.openshift.io/daemonset-dns": "default"},
        dns_cidrs=("169.254.20.10/32",),
    )
    policy = JobManifests(openshift, context(network_allowed=True)).algorithm_network_policy(OWNER_REF)
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    (dns,) = [rule for rule in policy["spec"]["egress"] if "ports" in rule]
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "openshift-dns"
    }
    assert dns["to"][0]["podSelector"]["matchLabels"] == {
        "dns.operator.openshift.io/daemonset-dns": "default"
    }
    assert dns["to"][1] == {"ipBlock": {"cidr": "169.254.20.10/32"}}
    assert {p["port"] for p in dns["ports"]} == {53}, "only DNS reaches the link-local cache"
