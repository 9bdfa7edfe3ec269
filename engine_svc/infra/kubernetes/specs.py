"""The Kubernetes objects of one job, as plain manifests (dicts in the API's own camelCase).

Per job, all labelled with its id and owned by its anchor ConfigMap (deleting the anchor lets
the cluster's garbage collector remove the rest, should the engine ever miss a clean-up):

    ConfigMap      c2d-<job>               the anchor: which engine, which environment
    PVC            c2d-<job>-data          the shared volume, sized to the environment's disk
    Secret         c2d-<job>-configure     the plan (dataset locations) and podtools' credentials;
                                           mounted into the configuration pod only
    Secret         c2d-<job>-publish       the result store's credentials (when there are any)
    NetworkPolicy  c2d-<job>-algorithm     no ingress; no egress unless the environment allows it
    NetworkPolicy  c2d-<job>-configure     no ingress; egress to the internet, not the cluster
    NetworkPolicy  c2d-<job>-publish       no ingress; no egress to a shared-volume result store
    Pod            c2d-<job>-configure     podtools configure (Ocean's pod-configuration)
    Pod            c2d-<job>-algorithm     the algorithm, in its runtime's image
    Pod            c2d-<job>-publish       podtools publish (Ocean's pod-publishing)

The data volume holds inputs/, transformations/, ddos/, outputs/, logs/ and captured/ (the
algorithm's stdout and stderr); each pod mounts only the folders it needs, read-only where it
only reads. Every container runs as a non-root uid with no privilege escalation, no capability,
a read-only root filesystem, the runtime's default seccomp profile, no service-account token
and no service links.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine_svc.domain.model import Environment, JobContext
from engine_svc.infra.kubernetes.settings import KubernetesSettings

Manifest = dict[str, Any]

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "c2d-engine"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_JOB = "c2d.io/job-id"
LABEL_ENGINE = "c2d.io/engine"
LABEL_PHASE = "c2d.io/phase"
LABEL_ENVIRONMENT = "c2d.io/environment"

CONFIGURE, ALGORITHM, PUBLISH = "configure", "algorithm", "publish"
PHASES = (CONFIGURE, ALGORITHM, PUBLISH)

# A podtool prints its result file on one line of its log, after this marker, as its last act.
RESULT_MARKER = "C2D-RESULT "
# The algorithm's wrapper leaves this in its termination message: the KiB its outputs, logs and
# captured output take on the job's volume.
USAGE_MARKER = "c2d-usage-kib "
TERMINATION_LOG = "/dev/termination-log"

CONFIGURE_SCRIPT = """\
mkdir -p /data/inputs /data/transformations /data/ddos /data/outputs /data/logs /data/captured || exit 70
python3 -m podtools.configure /c2d/job/job.json /tmp/c2d-result.json
code=$?
if [ -s /tmp/c2d-result.json ]; then printf '%s' '{marker}'; cat /tmp/c2d-result.json; echo; fi
exit $code
"""

PUBLISH_SCRIPT = """\
python3 -m podtools.publish /tmp/c2d-result.json "$@"
code=$?
if [ -s /tmp/c2d-result.json ]; then printf '%s' '{marker}'; cat /tmp/c2d-result.json; echo; fi
exit $code
"""

# Makes room in the result store for this job's attempt (an earlier, interrupted one's files go).
PREPARE_STORE_SCRIPT = 'rm -rf "/store/$C2D_JOB_ID" && mkdir -p "/store/$C2D_JOB_ID"'

# Runs the algorithm ("$@") with its stdout and stderr both in the pod's log (the live log) and
# in captured/ on the job's volume (published with the results). When the algorithm exits,
# whatever it left running ends too, as in the local sandbox, once the last of its output is
# copied. Then the space it used goes into the termination message for the disk quota check.
ALGORITHM_SCRIPT = """\
o=/tmp/.c2d-stdout e=/tmp/.c2d-stderr
rm -f "$o" "$e"
mkfifo "$o" "$e" || { echo "c2d: this image has no mkfifo" >&2; exit 125; }
tee -a /c2d/captured/stdout.log < "$o" & t1=$!
tee -a /c2d/captured/stderr.log < "$e" >&2 & t2=$!
"$@" > "$o" 2> "$e" < /dev/null & a=$!
wait "$a"
code=$?
alive() { [ -r "/proc/$1/stat" ] && read -r _ _ s _ < "/proc/$1/stat" && [ "$s" != Z ]; }
n=0
while { alive "$t1" || alive "$t2"; } && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
# Only as the container's init (its own PID namespace): elsewhere -1 would reach far more.
[ "$$" = 1 ] && kill -9 -1 2>/dev/null
wait
set -- $(du -skc /data/outputs /data/logs /c2d/captured 2>/dev/null | tail -n 1)
echo "@USAGE@${1:-0}" > @TERMINATION@ 2>/dev/null
exit $code
"""


def podtools_command(
    phase: str, *, include_outputs: bool = True, store: str = "/results", quota_bytes: int = 0
) -> list[str]:
    """The container command of a podtools pod. The one place that knows podtools' command lines
    (docs/storage.md): configure JOB_JSON RESULT_JSON; publish RESULT_JSON [--store STORE]
    [--quota BYTES] [--logs-only]."""
    if phase == CONFIGURE:
        return ["sh", "-c", CONFIGURE_SCRIPT.replace("{marker}", RESULT_MARKER)]
    if phase == PUBLISH:
        extra = ["--store", store]
        if quota_bytes:
            extra += ["--quota", str(quota_bytes)]
        if not include_outputs:
            extra.append("--logs-only")
        return ["sh", "-c", PUBLISH_SCRIPT.replace("{marker}", RESULT_MARKER), "c2d-publish", *extra]
    raise ValueError(f"no podtool for phase {phase!r}")


def algorithm_command(argv: list[str]) -> list[str]:
    script = ALGORITHM_SCRIPT.replace("@USAGE@", USAGE_MARKER).replace("@TERMINATION@", TERMINATION_LOG)
    return ["sh", "-c", script, "c2d-algorithm", *argv]


def parse_result_line(log: str) -> dict[str, Any] | None:
    """The result a podtool printed as the last line of its log (None if it printed none)."""
    for line in reversed(log.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                value = json.loads(line[len(RESULT_MARKER) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def parse_usage(termination_message: str | None) -> int | None:
    """Bytes the algorithm's outputs, logs and captured output take (None: not reported)."""
    for line in (termination_message or "").splitlines():
        if line.startswith(USAGE_MARKER):
            try:
                return int(line[len(USAGE_MARKER) :].strip()) * 1024
            except ValueError:
                return None
    return None


def anchor_name(job_id: str) -> str:
    return f"c2d-{job_id}"


def object_name(job_id: str, part: str) -> str:
    return f"c2d-{job_id}-{part}"


def job_selector(engine_id: str, job_id: str | None = None) -> str:
    """Label selector of everything this engine created (for one job, or for all its jobs)."""
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ENGINE}={engine_id}"
    return selector + (f",{LABEL_JOB}={job_id}" if job_id else "")


# Room on the node for an algorithm container's log, beside its /tmp.
CONTAINER_LOG_BYTES = 64 * 1024 * 1024


def cpu_quantity(cpus: float) -> str:
    return f"{max(1, round(cpus * 1000))}m"


@dataclass(frozen=True)
class Owner:
    """The anchor ConfigMap, once created: every other object of the job names it as its owner."""

    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "name": self.name, "uid": self.uid}


class JobManifests:
    """Builds the manifests of one job for one cluster configuration."""

    def __init__(self, settings: KubernetesSettings, job: JobContext):
        self.settings = settings
        self.job = job
        self.job_id = job.job_id
        self.env: Environment = job.environment

    # --- metadata ---------------------------------------------------------------------------------

    def labels(self, phase: str | None = None) -> dict[str, str]:
        labels = {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_PART_OF: "c2d",
            LABEL_ENGINE: self.settings.engine_id,
            LABEL_JOB: self.job_id,
        }
        if phase:
            labels[LABEL_PHASE] = phase
        return labels

    def _metadata(self, name: str, owner: Owner | None, phase: str | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.settings.namespace,
            "labels": self.labels(phase),
        }
        if owner is not None:
            metadata["ownerReferences"] = [owner.reference()]
        return metadata

    # --- objects ----------------------------------------------------------------------------------

    def anchor(self) -> Manifest:
        metadata = self._metadata(anchor_name(self.job_id), None)
        # Environment ids are free text; a label value cannot hold every one of them.
        metadata["annotations"] = {LABEL_ENVIRONMENT: self.env.id}
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": {"job-id": self.job_id, "environment": self.env.id},
            "immutable": True,
        }

    def data_volume_claim(self, owner: Owner) -> Manifest:
        spec: dict[str, Any] = {
            "accessModes": [self.settings.volume_access_mode],
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": str(self.env.disk_bytes)}},
        }
        if self.settings.storage_class:
            spec["storageClassName"] = self.settings.storage_class
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": self._metadata(object_name(self.job_id, "data"), owner),
            "spec": spec,
        }

    def secret(self, part: str, owner: Owner, values: Mapping[str, str]) -> Manifest:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self._metadata(object_name(self.job_id, part), owner),
            "type": "Opaque",
            "immutable": True,
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
        }

    def configure_secret(self, owner: Owner, plan: Mapping[str, Any], env: Mapping[str, str]) -> Manifest:
        return self.secret(CONFIGURE, owner, {"job.json": json.dumps(plan), **env})

    def _internet_egress(self) -> list[dict[str, Any]]:
        """Egress to the internet and the cluster's DNS, never to the cluster's own networks,
        link-local addresses (cloud metadata services) or the other blocked ranges."""
        blocked_v4 = [c for c in self.settings.blocked_cidrs if ":" not in c]
        blocked_v6 = [c for c in self.settings.blocked_cidrs if ":" in c]
        v4: dict[str, Any] = {"cidr": "0.0.0.0/0"}
        if blocked_v4:
            v4["except"] = blocked_v4
        v6: dict[str, Any] = {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10", *blocked_v6]}
        dns_peers: list[dict[str, Any]] = [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": self.settings.dns_namespace}
                },
                "podSelector": {"matchLabels": dict(self.settings.dns_pod_labels)},
            }
        ]
        dns_peers += [{"ipBlock": {"cidr": cidr}} for cidr in self.settings.dns_cidrs]
        return [
            {"to": [{"ipBlock": v4}, {"ipBlock": v6}]},
            {"to": dns_peers, "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        ]

    def _network_policy(self, phase: str, owner: Owner, egress: list[dict[str, Any]]) -> Manifest:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self._metadata(object_name(self.job_id, phase), owner),
            "spec": {
                "podSelector": {"matchLabels": {LABEL_JOB: self.job_id, LABEL_PHASE: phase}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": egress,
            },
        }

    def algorithm_network_policy(self, owner: Owner) -> Manifest:
        """Nothing may connect to the algorithm; it may connect nowhere, unless its environment
        allows network: then to the internet (and the cluster's DNS) only."""
        return self._network_policy(
            ALGORITHM, owner, self._internet_egress() if self.env.network_allowed else []
        )

    @staticmethod
    def _anywhere_but_metadata() -> list[dict[str, Any]]:
        """Egress anywhere (the cluster's networks included) except link-local addresses: a pod
        holding storage credentials never reaches a cloud metadata service (169.254.169.254,
        fd00:ec2::254 on AWS) and the node credentials it hands out."""
        return [
            {
                "to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
                    {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::/32"]}},
                ]
            }
        ]

    def configure_network_policy(self, owner: Owner, anywhere: bool) -> Manifest:
        """The configuration pod fetches from the internet; the cluster's own networks and cloud
        metadata stay out of reach (as podtools refuse private hosts), unless it may go anywhere:
        the engine allows private input hosts (the publisher's data on its own network), or the
        job reads the suite's own S3 or IPFS, which may well be in the cluster. Cloud metadata
        stays out of reach even then."""
        egress = self._anywhere_but_metadata() if anywhere else self._internet_egress()
        return self._network_policy(CONFIGURE, owner, egress)

    def publish_network_policy(self, owner: Owner, remote_store: bool) -> Manifest:
        """Publishing to the shared volume needs no network at all; to S3 or IPFS, the store's
        (wherever it is, but never a cloud metadata service)."""
        return self._network_policy(PUBLISH, owner, self._anywhere_but_metadata() if remote_store else [])

    # --- pods -------------------------------------------------------------------------------------

    def _container_security(self) -> dict[str, Any]:
        return {
            "runAsNonRoot": True,
            "runAsUser": self.settings.run_as_user,
            "runAsGroup": self.settings.run_as_user,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }

    def _container(
        self,
        name: str,
        image: str,
        command: list[str],
        mounts: list[dict[str, Any]],
        resources: dict[str, str],
        env: list[dict[str, Any]],
        working_dir: str = "/",
    ) -> dict[str, Any]:
        return {
            "name": name,
            "image": image,
            "imagePullPolicy": self.settings.image_pull_policy,
            "command": command,
            "workingDir": working_dir,
            "env": [
                {"name": "HOME", "value": "/tmp"},
                {"name": "LANG", "value": "C.UTF-8"},
                *env,
            ],
            "volumeMounts": mounts,
            # requests = limits: the Guaranteed class, never evicted for another pod's sake.
            "resources": {"requests": dict(resources), "limits": dict(resources)},
            "securityContext": self._container_security(),
            "terminationMessagePath": TERMINATION_LOG,
            "terminationMessagePolicy": "File",
        }

    def _podtools_resources(self) -> dict[str, str]:
        s = self.settings
        return {
            "cpu": s.podtools_cpu,
            "memory": s.podtools_memory,
            "ephemeral-storage": s.podtools_ephemeral_storage,
        }

    def _pod(
        self,
        phase: str,
        owner: Owner,
        containers: list[dict[str, Any]],
        volumes: list[dict[str, Any]],
        deadline_seconds: int,
        init_containers: list[dict[str, Any]] | None = None,
        tolerations: list[dict[str, Any]] | None = None,
    ) -> Manifest:
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": max(1, int(deadline_seconds)),
            "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": self.settings.run_as_user,
                "runAsGroup": self.settings.run_as_user,
                "fsGroup": self.settings.run_as_user,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": containers,
            "volumes": volumes,
        }
        if init_containers:
            spec["initContainers"] = init_containers
        if self.settings.image_pull_secrets:
            spec["imagePullSecrets"] = [{"name": n} for n in self.settings.image_pull_secrets]
        if self.settings.node_selector:
            spec["nodeSelector"] = dict(self.settings.node_selector)
        if tolerations:
            spec["tolerations"] = tolerations
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self._metadata(object_name(self.job_id, phase), owner, phase),
            "spec": spec,
        }

    def _data_volume(self) -> dict[str, Any]:
        return {"name": "data", "persistentVolumeClaim": {"claimName": object_name(self.job_id, "data")}}

    @staticmethod
    def _tmp_volume(size: str) -> dict[str, Any]:
        return {"name": "tmp", "emptyDir": {"sizeLimit": size}}

    @staticmethod
    def _secret_env(secret: str, names: tuple[str, ...]) -> list[dict[str, Any]]:
        return [
            {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}} for name in names
        ]

    def configure_pod(self, owner: Owner, timeout_seconds: float, env_names: tuple[str, ...]) -> Manifest:
        secret = object_name(self.job_id, CONFIGURE)
        container = self._container(
            CONFIGURE,
            self.settings.podtools_image,
            podtools_command(CONFIGURE),
            [
                {"name": "data", "mountPath": "/data"},
                {"name": "job", "mountPath": "/c2d/job", "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
            self._podtools_resources(),
            self._secret_env(secret, env_names),
        )
        volumes = [
            self._data_volume(),
            {
                "name": "job",
                "secret": {
                    "secretName": secret,
                    "items": [{"key": "job.json", "path": "job.json"}],
                    "defaultMode": 0o440,
                },
            },
            self._tmp_volume(self.settings.podtools_ephemeral_storage),
        ]
        return self._pod(CONFIGURE, owner, [container], volumes, int(timeout_seconds))

    def algorithm_pod(self, owner: Owner, image: str, argv: list[str]) -> Manifest:
        env = self.env
        algorithm = self.job.spec.algorithm
        # The environment's disk is the job's volume (inputs, outputs, logs: the PVC). The node
        # gives only scratch space: /tmp, as large as the local backend's (the smaller of disk and
        # memory), and room for the container's log. Sizing /tmp at the whole disk reserved the
        # environment's disk twice on the node.
        scratch = env.scratch_bytes
        resources = {
            "cpu": cpu_quantity(env.cpus),
            "memory": str(env.memory_bytes),
            "ephemeral-storage": str(scratch + CONTAINER_LOG_BYTES),
        }
        tolerations = None
        if env.gpus > 0:
            resources[self.settings.gpu_resource] = str(env.gpus)
            # GPU node pools are commonly tainted with the resource's name.
            tolerations = [{"key": self.settings.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]

        def mount(folder: str, path: str, read_only: bool) -> dict[str, Any]:
            return {"name": "data", "mountPath": path, "subPath": folder, "readOnly": read_only}

        container = self._container(
            ALGORITHM,
            image,
            algorithm_command(argv),
            [
                mount("inputs", "/data/inputs", True),
                mount("transformations", "/data/transformations", True),
                mount("ddos", "/data/ddos", True),
                mount("outputs", "/data/outputs", False),
                mount("logs", "/data/logs", False),
                mount("captured", "/c2d/captured", False),
                {"name": "tmp", "mountPath": "/tmp"},
            ],
            resources,
            [
                {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "DIDS", "value": json.dumps([d.did for d in self.job.spec.datasets])},
                {"name": "TRANSFORMATION_DID", "value": algorithm.did},
                {"name": "ALGO", "value": "/data/transformations/algorithm"},
            ],
            working_dir="/data",
        )
        volumes = [self._data_volume(), self._tmp_volume(str(scratch))]
        return self._pod(
            ALGORITHM, owner, [container], volumes, env.max_duration_seconds, tolerations=tolerations
        )

    def publish_pod(
        self,
        owner: Owner,
        timeout_seconds: float,
        include_outputs: bool,
        env_names: tuple[str, ...],
        store: str = "/results",
        quota_bytes: int = 0,
    ) -> Manifest:
        """store: podtools publish's --store; the shared volume (results_claim) is mounted at
        /results only when that is where the results go."""
        secret = object_name(self.job_id, PUBLISH)

        def mount(folder: str, path: str) -> dict[str, Any]:
            return {"name": "data", "mountPath": path, "subPath": folder, "readOnly": True}

        mounts = [
            mount("outputs", "/data/outputs"),
            mount("logs", "/data/logs"),
            mount("captured", "/c2d/algorithm-logs"),
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        volumes = [self._data_volume(), self._tmp_volume(self.settings.podtools_ephemeral_storage)]
        init_containers = []
        job_env = [{"name": "C2D_JOB_ID", "value": self.job_id}]
        if self.settings.results_claim and store == "/results":
            volumes.append(
                {"name": "results", "persistentVolumeClaim": {"claimName": self.settings.results_claim}}
            )
            mounts.append({"name": "results", "mountPath": "/results", "subPath": self.job_id})
            init_containers.append(
                self._container(
                    "prepare-store",
                    self.settings.podtools_image,
                    ["sh", "-c", PREPARE_STORE_SCRIPT],
                    [{"name": "results", "mountPath": "/store"}],
                    self._podtools_resources(),
                    job_env,
                )
            )
        container = self._container(
            PUBLISH,
            self.settings.podtools_image,
            podtools_command(PUBLISH, include_outputs=include_outputs, store=store, quota_bytes=quota_bytes),
            mounts,
            self._podtools_resources(),
            [*job_env, *self._secret_env(secret, env_names)],
        )
        return self._pod(PUBLISH, owner, [container], volumes, int(timeout_seconds), init_containers)
