"""bubblewrap command lines for a job's sandboxes.

Every phase runs in new user, PID, IPC, UTS, cgroup and (unless allowed) network namespaces, as an
unprivileged uid, with the system's /usr read-only, a private /tmp, and only the job's own folders
bound in. Nothing else of the host is visible: not other jobs, not the services' state or keys.
Resource limits are set with prlimit around bwrap, so they hold for every process inside.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

SANDBOX_UID = 65534
SANDBOX_GID = 65534


@dataclass(frozen=True)
class Limits:
    # Address space (RLIMIT_AS); None where a cgroup limits memory instead (an RLIMIT_AS hit is a
    # MemoryError, which the engine cannot tell from any other failure; a cgroup OOM kill it can).
    memory_bytes: int | None
    cpu_seconds: int
    file_size_bytes: int
    open_files: int = 1024
    # Scheduling niceness of everything in the sandbox (0 to 19): the services answer first when
    # jobs keep the CPUs busy, so Watch streams and new calls do not queue behind algorithms.
    nice: int = 0


@dataclass
class SandboxSpec:
    argv: list[str]
    # "none": a network namespace with only lo; "host": the host's network (podtools fetching
    # inputs); "isolated": a namespace of its own that slirp4netns connects to the outside, with
    # the host's loopback (and so the suite's services) out of reach (network-allowed algorithms).
    network: str = "none"
    # For "isolated": bwrap reports the sandbox's pid on info_fd and waits on block_fd until the
    # engine has connected the namespace.
    info_fd: int | None = None
    block_fd: int | None = None
    resolv_conf: str | None = None
    ro_binds: list[tuple[str, str]] = field(default_factory=list)
    rw_binds: list[tuple[str, str]] = field(default_factory=list)
    # Folders (host paths) that must be visible read-only at the same path, e.g. an interpreter.
    host_ro_paths: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    chdir: str = "/"
    limits: Limits | None = None
    # Size of the private /tmp (a tmpfs: it lives in memory, so it is always bounded).
    tmp_bytes: int = 64 * 1024 * 1024
    # The host uid (and gid) the command runs as, for a sandbox started by root: the engine writes
    # the user namespace's maps itself (inside 0 -> host 0 for bwrap's own setup, inside U -> host
    # U), bwrap waits on userns_block_fd until it has, and setpriv switches to U, dropping every
    # capability, before the command runs. None: the sandbox user (65534 inside) is the engine's
    # own uid on the host, as an unprivileged engine's must be.
    host_user: int | None = None
    userns_block_fd: int | None = None


def find_bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise RuntimeError(
            "bubblewrap (bwrap) is not installed; the local backend needs it: apt-get install bubblewrap"
        )
    return path


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            args += ["--ro-bind", str(path), f"/{name}"]
    return args


_NETWORK_ETC = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl", "/etc/ca-certificates")


def build_command(spec: SandboxSpec, bwrap: str | None = None) -> list[str]:
    args: list[str] = []
    if spec.limits is not None:
        lim = spec.limits
        if lim.nice:
            args += ["nice", "-n", str(lim.nice)]
        args += ["prlimit"]
        if lim.memory_bytes is not None:
            args += [f"--as={lim.memory_bytes}"]
        args += [
            f"--cpu={lim.cpu_seconds}",
            f"--fsize={lim.file_size_bytes}",
            f"--nofile={lim.open_files}",
            "--core=0",
            "--",
        ]
    args += [bwrap or find_bwrap(), "--unshare-all", "--die-with-parent", "--new-session"]
    if spec.host_user is None:
        args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), "--cap-drop", "ALL"]
    else:
        if spec.userns_block_fd is None or spec.info_fd is None:
            raise ValueError("a sandbox with a host user needs userns_block_fd and info_fd")
        # What setpriv needs to become the host user and drop the rest; it keeps nothing.
        args += ["--unshare-user", "--userns-block-fd", str(spec.userns_block_fd), "--cap-drop", "ALL"]
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    args += ["--hostname", "c2d-sandbox"]
    if spec.network not in ("none", "host", "isolated"):
        raise ValueError(f"unknown network mode {spec.network!r}")
    if spec.network == "host":
        args += ["--share-net"]
    if spec.info_fd is not None:
        args += ["--info-fd", str(spec.info_fd)]
    if spec.block_fd is not None:
        args += ["--block-fd", str(spec.block_fd)]
    args += _system_binds()
    args += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(spec.tmp_bytes),
        # Sticky and writable by all: the sandbox user is not the tmpfs's owner when it runs as a
        # host user (the mounts are made as the namespace's root).
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--dir",
        "/data",
    ]
    if spec.network != "none":
        for path in _NETWORK_ETC:
            if path == "/etc/resolv.conf" and spec.resolv_conf is not None:
                args += ["--ro-bind", spec.resolv_conf, path]
            elif os.path.exists(path):
                args += ["--ro-bind", path, path]
    for path in spec.host_ro_paths:
        args += ["--ro-bind", path, path]
    for source, target in spec.rw_binds:
        args += ["--bind", source, target]
    for source, target in spec.ro_binds:
        args += ["--ro-bind", source, target]
    # The root (bwrap's own tmpfs, owned by the sandbox user) becomes read-only once everything is
    # mounted: the only writable places are the sized /tmp and the rw binds.
    args += ["--remount-ro", "/", "--chdir", spec.chdir, "--"]
    if spec.host_user is not None:
        args += [
            SETPRIV,
            f"--reuid={spec.host_user}",
            f"--regid={spec.host_user}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    return [*args, *spec.argv]


SETPRIV = "/usr/bin/setpriv"


def user_namespace_maps(host_user: int) -> str:
    """uid_map and gid_map of a sandbox with a host user (see SandboxSpec.host_user)."""
    return f"0 0 1\n{host_user} {host_user} 1\n"
