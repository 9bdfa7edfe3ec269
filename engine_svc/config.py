from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from c2d_common.env import ConfigError, env_bool, env_int, env_paths, env_str
from c2d_common.file_urls import FileUrlPolicy
from c2d_common.storage import StorageSettings
from engine_svc.domain.model import Environment

GiB = 1024**3

DEFAULT_ENVIRONMENTS = (
    Environment(
        id="local-small",
        description="Local sandbox: 1 CPU, 1 GiB memory, 1 GiB disk, 10 minutes, no network",
        cpus=1.0,
        memory_bytes=1 * GiB,
        disk_bytes=1 * GiB,
        max_duration_seconds=600,
        network_allowed=False,
        free=True,
    ),
)


# Each field's type in C2D_ENVIRONMENTS, and whether 0 is allowed for a number.
_INTEGER_FIELDS = {"memory_bytes": False, "disk_bytes": False, "max_duration_seconds": False}
_INTEGER_FIELDS |= {"max_processes": False, "gpus": True}


def parse_environments(raw: str) -> tuple[Environment, ...]:
    """C2D_ENVIRONMENTS: a JSON list of objects with Environment's fields, each checked here so
    that a typo stops the engine at start, not a job (or a pod the API server refuses) later."""
    try:
        items = json.loads(raw)
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise TypeError("not a list of objects")
        environments = tuple(_environment(index, item) for index, item in enumerate(items))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"C2D_ENVIRONMENTS is not a JSON list of environments: {exc}") from None
    if not environments:
        raise ConfigError("C2D_ENVIRONMENTS lists no environment")
    ids = [e.id for e in environments]
    if len(set(ids)) != len(ids):
        raise ConfigError("C2D_ENVIRONMENTS names an environment id twice")
    return environments


def _environment(index: int, item: dict[str, object]) -> Environment:
    where = f"environment {index} ({item.get('id', '?')})"
    if not isinstance(item.get("id"), str) or not item["id"]:
        raise TypeError(f"{where}: id must be a non-empty string")
    for name, zero_allowed in _INTEGER_FIELDS.items():
        if name in item:
            value = item[name]
            if type(value) is not int or value < 0 or (value == 0 and not zero_allowed):
                raise TypeError(
                    f"{where}: {name} must be a {'whole number' if zero_allowed else 'positive integer'}"
                )
    cpus = item.get("cpus")
    if type(cpus) not in (int, float) or not 0 < float(cpus) < 1e6:  # type: ignore[arg-type]
        raise TypeError(f"{where}: cpus must be a positive number")
    for name in ("network_allowed", "free"):
        if name in item and type(item[name]) is not bool:
            raise TypeError(f"{where}: {name} must be true or false")
    runtimes = item.get("runtimes", ("python3",))
    if not isinstance(runtimes, (list, tuple)) or not all(isinstance(r, str) and r for r in runtimes):
        raise TypeError(f"{where}: runtimes must be a list of names")
    return Environment(**{**item, "cpus": float(cpus), "runtimes": tuple(runtimes)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class EngineSettings:
    listen: str = "127.0.0.1:50053"
    work_dir: Path = Path("c2d-state/work")
    results_dir: Path = Path("c2d-state/results")
    max_concurrent_jobs: int = 2
    sandbox_nice: int = 10
    # The host uid algorithms run as; "auto": 65534 when the engine is root, else its own uid.
    sandbox_uid: int | Literal["auto"] | None = "auto"
    configure_timeout_seconds: int = 600
    publish_timeout_seconds: int = 600
    environments: tuple[Environment, ...] = DEFAULT_ENVIRONMENTS
    runtimes: dict[str, str] = field(default_factory=dict)
    # As the provider's: where file:// inputs may lie (none: no file:// inputs), and what they may
    # never name.
    file_url_roots: tuple[Path, ...] = ()
    file_url_denied: tuple[Path, ...] = ()
    # http(s) inputs from private addresses: off, so a dataset URL cannot reach this machine's or
    # this network's own services; on where the publisher's data lives on its private network.
    allow_private_input_hosts: bool = False
    # Inputs from S3 and IPFS, the result store (local, S3 or IPFS), quotas: see docs/storage.md.
    storage: StorageSettings = field(default_factory=StorageSettings)
    port_file: str | None = None
    # host:port of the Prometheus /metrics endpoint; empty: none.
    metrics_listen: str | None = None

    def file_policy(self) -> FileUrlPolicy:
        return FileUrlPolicy(
            roots=self.file_url_roots,
            denied=(self.work_dir, self.results_dir, *self.file_url_denied),
            results=(self.results_dir,),
        )

    @classmethod
    def from_env(cls) -> EngineSettings:
        raw_envs = os.environ.get("C2D_ENVIRONMENTS")
        runtimes_raw = os.environ.get("C2D_RUNTIMES", "")
        try:
            runtimes = json.loads(runtimes_raw) if runtimes_raw else {}
        except ValueError:
            raise ConfigError(
                'C2D_RUNTIMES must be a JSON object such as {"python3": "/usr/bin/python3"}'
            ) from None
        return cls(
            listen=env_str("C2D_ENGINE_LISTEN", cls.listen),
            work_dir=Path(env_str("C2D_WORK_DIR", str(cls.work_dir))).absolute(),
            results_dir=Path(env_str("C2D_RESULTS_DIR", str(cls.results_dir))).absolute(),
            max_concurrent_jobs=env_int("C2D_MAX_CONCURRENT_JOBS", cls.max_concurrent_jobs),
            sandbox_nice=_nice(env_int("C2D_SANDBOX_NICE", cls.sandbox_nice)),
            sandbox_uid=_sandbox_uid(env_str("C2D_SANDBOX_UID", "auto")),
            configure_timeout_seconds=env_int("C2D_CONFIGURE_TIMEOUT_SECONDS", cls.configure_timeout_seconds),
            publish_timeout_seconds=env_int("C2D_PUBLISH_TIMEOUT_SECONDS", cls.publish_timeout_seconds),
            environments=parse_environments(raw_envs) if raw_envs else DEFAULT_ENVIRONMENTS,
            runtimes=runtimes,
            file_url_roots=env_paths("C2D_FILE_URL_ROOTS"),
            file_url_denied=env_paths("C2D_FILE_URL_DENY"),
            allow_private_input_hosts=env_bool(
                "C2D_ALLOW_PRIVATE_INPUT_HOSTS", cls.allow_private_input_hosts
            ),
            storage=StorageSettings.from_env(),
            port_file=env_str("C2D_PORT_FILE", "") or None,
            metrics_listen=env_str("C2D_METRICS_LISTEN", "") or None,
        )


def _sandbox_uid(raw: str) -> int | Literal["auto"] | None:
    value = raw.strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value == "engine":
        return None
    if not value.isdigit() or not 0 < int(value) < 2**32 - 1:
        raise ConfigError(
            f"C2D_SANDBOX_UID={raw!r}: an unprivileged uid (e.g. 65534), auto (65534 when the engine "
            "is root), or engine (the engine's own uid)"
        )
    return int(value)


def _nice(value: int) -> int:
    if not 0 <= value <= 19:
        raise ConfigError(f"C2D_SANDBOX_NICE={value}: a niceness from 0 (none) to 19 (lowest priority)")
    return value
