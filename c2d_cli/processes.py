"""Runs the three services as separate processes on this machine (the embedded default).

Each binds port 0 and writes its port to a file, so several suites never collide; the next service
is started once the previous one answers its health check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from c2d_common.server import insecure_channel


class ServiceFailedToStart(Exception):
    pass


class ServiceAlreadyExited(Exception):
    """A service meant to be killed had died on its own: a crash the caller must not overlook."""


@dataclass
class LocalSuite:
    state_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    # How each service was started (module, environment, log), so that it can be started again.
    launches: dict[str, tuple[str, dict[str, str], Path]] = field(default_factory=dict)
    # The provider's C2D_PUBLISHERS: who may publish on it.
    publishers: str = ""

    @property
    def provider_address(self) -> str:
        return f"127.0.0.1:{self.ports['provider']}"

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"


async def wait_healthy(address: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                response = await stub.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2, wait_for_ready=True
                )
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not become healthy within {timeout} s")
            await asyncio.sleep(0.05)


async def _start_one(
    suite: LocalSuite, name: str, module: str, env: dict[str, str], log_path: Path, timeout: float
) -> None:
    suite.launches[name] = (module, env, log_path)
    port_file = suite.state_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    full_env = {**os.environ, **env, "C2D_PORT_FILE": str(port_file)}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=full_env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    suite.processes[name] = process
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if process.poll() is not None:
            raise ServiceFailedToStart(f"{name} exited with code {process.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            raise ServiceFailedToStart(f"{name} did not start within {timeout} s; see {log_path}")
        await asyncio.sleep(0.02)
    suite.ports[name] = int(port_file.read_text())
    await wait_healthy(suite.address(name), timeout)


async def start_local_suite(
    state_dir: Path,
    *,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
    metrics_ports: dict[str, int] | None = None,
    publishers: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> LocalSuite:
    """The three services as processes on state_dir. `publishers`: the addresses that may publish
    (the provider's C2D_PUBLISHERS, with those the environment already lists); `c2d services` and
    `c2d demo` name the CLI's own key. None keeps the environment's C2D_PUBLISHERS, else lets any
    key publish anything (`*`): for tests and benchmarks, whose keys come and go."""
    state_dir = state_dir.absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    suite = LocalSuite(state_dir)
    ports = ports or {}
    common = {
        "C2D_RESULTS_DIR": str(state_dir / "results"),
        # file:// data from the folder the suite is started in (the embedded default); the suite's
        # own state is never an input, whatever folders data may come from.
        "C2D_FILE_URL_ROOTS": str(Path.cwd()),
        "C2D_FILE_URL_DENY": str(state_dir),
        "C2D_PUBLISHERS": _publishers_setting(publishers),
        **(extra_env or {}),
    }
    suite.publishers = common["C2D_PUBLISHERS"]
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)
    try:
        await _start_one(
            suite,
            "engine",
            "engine_svc",
            {
                **common,
                "C2D_ENGINE_LISTEN": f"127.0.0.1:{ports.get('engine', 0)}",
                **_metrics_env(metrics_ports, "engine"),
                "C2D_WORK_DIR": str(state_dir / "work"),
            },
            logs / "engine.log",
            timeout,
        )
        await _start_one(
            suite,
            "operator",
            "operator_svc",
            {
                **common,
                "C2D_OPERATOR_LISTEN": f"127.0.0.1:{ports.get('operator', 0)}",
                **_metrics_env(metrics_ports, "operator"),
                "C2D_ENGINE_ADDRESS": suite.address("engine"),
                "C2D_DATABASE_URL": database_url or f"sqlite:///{state_dir / 'operator.db'}",
            },
            logs / "operator.log",
            timeout,
        )
        await _start_one(
            suite,
            "provider",
            "provider_svc",
            {
                **common,
                "C2D_PROVIDER_LISTEN": f"127.0.0.1:{ports.get('provider', 0)}",
                **_metrics_env(metrics_ports, "provider"),
                "C2D_OPERATOR_ADDRESS": suite.address("operator"),
                "C2D_ASSETS_DIR": str(state_dir / "assets"),
            },
            logs / "provider.log",
            timeout,
        )
    except BaseException:
        stop_local_suite(suite)
        raise
    return suite


async def restart_service(
    suite: LocalSuite, name: str, timeout: float = 30.0, down_seconds: float = 0.0
) -> None:
    """Kills one service with SIGKILL (no clean-up of any kind) and starts it again on the same
    port with the same configuration, after down_seconds: what a crash and a supervisor's restart
    look like.

    Raises ServiceAlreadyExited, and starts nothing, when the service had already exited: killing
    it silently would hide a crash of its own."""
    process = suite.processes[name]
    if process.poll() is not None:
        raise ServiceAlreadyExited(
            f"{name} had already exited with code {process.returncode} before it was killed; "
            f"see {suite.launches[name][2]}"
        )
    process.kill()
    await asyncio.to_thread(process.wait)
    await asyncio.sleep(down_seconds)
    module, env, log_path = suite.launches[name]
    listen_variable = {
        "engine": "C2D_ENGINE_LISTEN",
        "operator": "C2D_OPERATOR_LISTEN",
        "provider": "C2D_PROVIDER_LISTEN",
    }
    env = {**env, listen_variable[name]: f"127.0.0.1:{suite.ports[name]}"}
    await _start_one(suite, name, module, env, log_path, timeout)


def stop_local_suite(suite: LocalSuite, timeout: float = 20.0) -> dict[str, int | None]:
    """SIGTERM in reverse order (provider first), then wait; SIGKILL what does not stop in time."""
    codes: dict[str, int | None] = {}
    for name in ("provider", "operator", "engine"):
        process = suite.processes.get(name)
        if process is None:
            continue
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            codes[name] = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            codes[name] = process.wait()
    return codes


def _publishers_setting(publishers: Sequence[str] | None) -> str:
    configured = [p.strip() for p in os.environ.get("C2D_PUBLISHERS", "").split(",") if p.strip()]
    if publishers is None:
        return ",".join(configured) or "*"
    return ",".join(dict.fromkeys([*configured, *publishers]))


def _metrics_env(metrics_ports: dict[str, int] | None, service: str) -> dict[str, str]:
    if not metrics_ports or service not in metrics_ports:
        return {}
    return {"C2D_METRICS_LISTEN": f"127.0.0.1:{metrics_ports[service]}"}


@contextlib.asynccontextmanager
async def local_suite(state_dir: Path, **kwargs: object) -> AsyncIterator[LocalSuite]:
    suite = await start_local_suite(state_dir, **kwargs)  # type: ignore[arg-type]
    try:
        yield suite
    finally:
        stop_local_suite(suite)
