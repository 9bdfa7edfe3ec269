"""The Kubernetes backend's settings, read from C2D_K8S_* environment variables at start-up.

Everything a cluster decides (namespace, storage class, images, how long a pod may take to start)
is here; everything a job decides (resources, deadline, network) comes from its environment.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from c2d_common.env import ConfigError, env_bool, env_int, env_str

# RFC 1123 label: what a namespace, a label value and a PVC name must look like.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Where an algorithm with network may never connect: the cluster's own networks (the suite's
# internal APIs, the API server, other jobs), link-local (cloud metadata services with node
# credentials) and carrier-grade NAT ranges some clusters use for pods.
DEFAULT_BLOCKED_CIDRS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
)


@dataclass(frozen=True)
class KubernetesSettings:
    # Where job pods, volumes, secrets and policies are created (the engine's Role is there).
    namespace: str = "c2d-jobs"
    # This engine's name among the engines sharing the namespace; labels its jobs so that a
    # restarted engine finds its own (a StatefulSet's pod name is a good choice).
    engine_id: str = "engine"
    # The image with podtools (deploy/podtools.Dockerfile) and a POSIX shell.
    podtools_image: str = "c2d-podtools:0.1.0"
    # Runtime name an algorithm asks for -> the image its pod runs. An algorithm image needs a
    # POSIX shell with mkfifo, tee and du (any Debian, Ubuntu, Alpine or busybox based image).
    runtime_images: dict[str, str] = field(default_factory=lambda: {"python3": "python:3.11-slim"})
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    # The job's shared volume (inputs, algorithm, outputs, logs): a PVC of this class (empty:
    # the cluster's default class), sized to the environment's disk.
    storage_class: str = ""
    volume_access_mode: str = "ReadWriteOnce"
    # The local result store: a PVC in the job namespace (ReadWriteMany) that publishing pods
    # write <job_id>/… to; the provider (and the engine, for clean-up) see the same storage at
    # C2D_RESULTS_DIR. Empty: results go to the store podtools are configured for (S3, IPFS).
    results_claim: str = "c2d-results"
    # Resources of the configuration and publishing pods.
    podtools_cpu: str = "500m"
    podtools_memory: str = "512Mi"
    podtools_ephemeral_storage: str = "1Gi"
    # A pod not running after this long (unschedulable, image not pulled) fails its phase.
    start_timeout_seconds: int = 300
    # Time a job found in the cluster at start-up has to be claimed by the operator (RunJob)
    # before this engine deletes it.
    adopt_grace_seconds: int = 300
    # On SIGTERM, leave running jobs in the cluster for the next engine to carry on (true), or
    # delete them like the local backend does (false).
    keep_jobs_on_shutdown: bool = True
    # Names of this engine's environment variables that podtools need (storage credentials…):
    # each job gets them in Secrets of its own, seen only by its configuration (dataset access)
    # or publishing (result store) pod.
    configure_env: tuple[str, ...] = ()
    publish_env: tuple[str, ...] = ()
    # Egress a network-allowed algorithm never gets (see DEFAULT_BLOCKED_CIDRS).
    blocked_cidrs: tuple[str, ...] = DEFAULT_BLOCKED_CIDRS
    # Where internet-only pods may ask DNS (port 53): the cluster DNS pods (kube-dns's namespace
    # and labels by default; OpenShift's are openshift-dns with dns.operator.openshift.io/daemonset-dns),
    # and addresses such as NodeLocal DNSCache's 169.254.20.10/32, which the blocked ranges hide.
    dns_namespace: str = "kube-system"
    dns_pod_labels: dict[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    dns_cidrs: tuple[str, ...] = ()
    # uid and gid every job container runs as.
    run_as_user: int = 65534
    # Extended resource for GPUs; pods that ask for it tolerate the taint of the same name.
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = field(default_factory=dict)
    # Empty: in-cluster configuration when running in a pod, else $KUBECONFIG / ~/.kube/config.
    kubeconfig: str = ""
    context: str = ""
    # A watch is reopened (from its last resourceVersion) after this long.
    watch_timeout_seconds: int = 240

    def check(self) -> None:
        if not _DNS_LABEL.fullmatch(self.namespace) or len(self.namespace) > 63:
            raise ConfigError(f"C2D_K8S_NAMESPACE={self.namespace!r} is not a namespace name")
        if not _LABEL_VALUE.fullmatch(self.engine_id) or not self.engine_id or len(self.engine_id) > 63:
            raise ConfigError(
                f"C2D_K8S_ENGINE_ID={self.engine_id!r} must be a label value (letters, digits, -_., ≤63)"
            )
        if self.results_claim and not _DNS_LABEL.fullmatch(self.results_claim):
            raise ConfigError(f"C2D_K8S_RESULTS_CLAIM={self.results_claim!r} is not a PVC name")
        for name in ("podtools_cpu", "podtools_memory", "podtools_ephemeral_storage"):
            if not _QUANTITY.fullmatch(getattr(self, name)):
                raise ConfigError(f"C2D_K8S_{name.upper()}={getattr(self, name)!r} is not a quantity")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ConfigError("C2D_K8S_IMAGE_PULL_POLICY must be Always, IfNotPresent or Never")
        if self.volume_access_mode not in ("ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"):
            raise ConfigError(
                "C2D_K8S_VOLUME_ACCESS_MODE must be ReadWriteOnce, ReadWriteOncePod or ReadWriteMany"
            )
        for name in (*self.configure_env, *self.publish_env):
            if not _ENV_NAME.fullmatch(name):
                raise ConfigError(f"{name!r} is not an environment variable name")
        if self.run_as_user <= 0:
            raise ConfigError("C2D_K8S_RUN_AS_USER must be a uid other than root's")
        if not _DNS_LABEL.fullmatch(self.dns_namespace) or len(self.dns_namespace) > 63:
            raise ConfigError(f"C2D_K8S_DNS_NAMESPACE={self.dns_namespace!r} is not a namespace name")
        for cidr in (*self.dns_cidrs, *self.blocked_cidrs):
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise ConfigError(
                    f"{cidr!r} (C2D_K8S_DNS_CIDRS or C2D_K8S_BLOCKED_CIDRS) is not a CIDR"
                ) from None

    @classmethod
    def from_env(cls) -> KubernetesSettings:
        settings = cls(
            namespace=env_str("C2D_K8S_NAMESPACE", cls.namespace),
            engine_id=env_str("C2D_K8S_ENGINE_ID", "") or _default_engine_id(),
            podtools_image=env_str("C2D_K8S_PODTOOLS_IMAGE", cls.podtools_image),
            runtime_images=_json_str_map("C2D_K8S_RUNTIME_IMAGES") or {"python3": "python:3.11-slim"},
            image_pull_policy=env_str("C2D_K8S_IMAGE_PULL_POLICY", cls.image_pull_policy),
            image_pull_secrets=_names("C2D_K8S_IMAGE_PULL_SECRETS"),
            storage_class=env_str("C2D_K8S_STORAGE_CLASS", cls.storage_class),
            volume_access_mode=env_str("C2D_K8S_VOLUME_ACCESS_MODE", cls.volume_access_mode),
            results_claim=env_str("C2D_K8S_RESULTS_CLAIM", cls.results_claim),
            podtools_cpu=env_str("C2D_K8S_PODTOOLS_CPU", cls.podtools_cpu),
            podtools_memory=env_str("C2D_K8S_PODTOOLS_MEMORY", cls.podtools_memory),
            podtools_ephemeral_storage=env_str(
                "C2D_K8S_PODTOOLS_EPHEMERAL_STORAGE", cls.podtools_ephemeral_storage
            ),
            start_timeout_seconds=env_int("C2D_K8S_START_TIMEOUT_SECONDS", cls.start_timeout_seconds),
            adopt_grace_seconds=env_int("C2D_K8S_ADOPT_GRACE_SECONDS", cls.adopt_grace_seconds),
            keep_jobs_on_shutdown=env_bool("C2D_K8S_KEEP_JOBS_ON_SHUTDOWN", cls.keep_jobs_on_shutdown),
            configure_env=_names("C2D_K8S_CONFIGURE_ENV"),
            publish_env=_names("C2D_K8S_PUBLISH_ENV"),
            blocked_cidrs=_names("C2D_K8S_BLOCKED_CIDRS") or DEFAULT_BLOCKED_CIDRS,
            dns_namespace=env_str("C2D_K8S_DNS_NAMESPACE", cls.dns_namespace),
            dns_pod_labels=_json_str_map("C2D_K8S_DNS_POD_LABELS") or {"k8s-app": "kube-dns"},
            dns_cidrs=_names("C2D_K8S_DNS_CIDRS"),
            run_as_user=env_int("C2D_K8S_RUN_AS_USER", cls.run_as_user),
            gpu_resource=env_str("C2D_K8S_GPU_RESOURCE", cls.gpu_resource),
            node_selector=_json_str_map("C2D_K8S_NODE_SELECTOR"),
            kubeconfig=env_str("C2D_K8S_KUBECONFIG", ""),
            context=env_str("C2D_K8S_CONTEXT", ""),
            watch_timeout_seconds=env_int("C2D_K8S_WATCH_TIMEOUT_SECONDS", cls.watch_timeout_seconds),
        )
        settings.check()
        return settings


def _default_engine_id() -> str:
    # In a StatefulSet the hostname is the pod's stable name (engine-0); elsewhere, the host's.
    name = (os.environ.get("HOSTNAME") or socket.gethostname()).lower()
    name = re.sub(r"[^a-z0-9-_.]", "-", name)[:63].strip("-_.")
    return name or "engine"


def _names(variable: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(variable, "").split(",") if item.strip())


def _json_str_map(variable: str) -> dict[str, str]:
    raw = os.environ.get(variable, "")
    if not raw:
        return {}
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(
            f'{variable} must be a JSON object of strings, such as {{"python3": "python:3.11"}}'
        )
    return dict(value)
